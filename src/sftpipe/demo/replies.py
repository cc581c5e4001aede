"""Customer turns and gold assistant replies for Harbor tickets, from the facts.

Customer turns vary; replies are nearly fixed per category and outcome (one opener, one body), state the fact and
the rule before each decision, and keep the policy-mandated parts (order ID, refund JSON, fraud warning,
escalation sentence, ETA wording) exact. Replies are short (about 20-70 words) for a 135M model on a CPU.
"""

from __future__ import annotations

import json
import random

from .facts import money, refund_offer
from .policy import ESCALATION, FRAUD_WARNING, FRAUD_WARNING_CATEGORIES

SYSTEM_PROMPT = "You are Harbor Support's assistant. Help customers with orders and accounts, briefly and by policy."

# category -> (templates quoting the order ID, templates without it)
USER = {
    "order_status": (
        ["Hi, where is my order {oid}? I picked {shipping} shipping.", "Can you check on order {oid}? I paid for "
         "{shipping} delivery.", "hey any update on {oid}? went with {shipping} shipping",
         "When will order {oid} arrive? It was {shipping} shipping."],
        ["Hi, where is my order? I picked {shipping} shipping.", "When will my package arrive? I chose {shipping} "
         "delivery.", "hey, any update on my order? {shipping} shipping"]),
    "shipping_delay": (
        ["My order {oid} is {days_late} days late. What's going on?", "{oid} should have arrived {days_late} days "
         "ago and it's still not here.", "still waiting on order {oid}, it's {days_late} days past the delivery date",
         "Order {oid} is now {days_late} days overdue. Where is it?"],
        ["My package is {days_late} days late. What's going on?", "My order should have arrived {days_late} days "
         "ago and it's still not here."]),
    "refund": (
        ["I'd like a refund for order {oid}. It was delivered {days} days ago and the total was {total}.",
         "Please refund order {oid} ({total}). I got it {days} days ago and don't want it anymore.",
         "Can I return order {oid} for my money back? Total {total}, delivered {days} days ago."],
        ["I'd like a refund for my order. It was delivered {days} days ago and the total was {total}.",
         "Can I get my money back for my last order? Total {total}, delivered {days} days ago."]),
    "partial_refund": (
        ["Order {oid} arrived without {missing}. The rest of the parcel was fine.", "My parcel for {oid} is missing "
         "{missing}. Everything else came.", "Hi, {oid} came but {missing} {was} not in the box."],
        ["My parcel arrived without {missing}. The rest was fine.", "My order came but {missing} {was} not in the "
         "box."]),
    "damaged_item": (
        ["I ordered {items_text} in order {oid}. The {damaged} arrived broken.", "The {damaged} ({dprice}) from "
         "order {oid} arrived cracked.", "Order {oid}: the {damaged} ({dprice}) was smashed when I opened the box."],
        ["The {damaged} ({dprice}) from my order arrived cracked.", "I ordered {items_text}. The {damaged} arrived "
         "broken."]),
    "cancellation": (
        ["Please cancel order {oid} ({total}). {ship_note}", "Can I still cancel order {oid}? Total {total}. "
         "{ship_note}", "cancel {oid} please ({total}). {ship_note}"],
        ["Please cancel my order ({total}). {ship_note}", "Can I still cancel my last order? Total {total}. "
         "{ship_note}"]),
    "address_change": (
        ["Can I change the delivery address on {oid}? {ship_note}", "I moved last week. Please update the address "
         "for order {oid}. {ship_note}"],
        ["Can I change the delivery address on my order? {ship_note}", "I moved. Can you update the address on my "
         "order? {ship_note}"]),
    "account_lockout": ([], []),  # composed from LOCKOUT_PARTS
    "chargeback": (
        ["I filed a chargeback with my bank for order {oid} ({total}). Can you just refund me instead?",
         "My bank is disputing order {oid} ({total}) for me. What happens now?", "I opened a card dispute on "
         "{oid}. Will you refund me?"],
        ["I filed a chargeback with my bank for my last order ({total}). What now?"]),
    "fraud_suspicion": (
        ["There's an order {oid} on my account that I didn't place!", "I got a confirmation for order {oid} "
         "({total}) but I never ordered that.", "Someone used my account to buy order {oid}. It wasn't me."],
        ["I got a confirmation email for an order I never placed ({total}).", "Someone placed an order on my "
         "account that wasn't me."]),
}
ASKABLE = tuple(c for c, (_, without) in USER.items() if without)  # categories that can arrive without an ID
SHIP_NOTES = {False: ["It hasn't shipped yet.", "It's still processing.", "It has not shipped."],
              True: ["The tracking says it already shipped.", "It shipped yesterday.", "It's already on its way."]}
GIVE_ID = ["It's {oid}.", "Sure, it's {oid}.", "Order ID is {oid}.", "{oid}", "oh sorry, {oid}"]

# One opener per category: randomised openers are noise for a small model (a tenth of the reply tokens but a third
# of the loss in an earlier version), so every reply of a category starts the same way. The export's openers are
# long and empathetic, as support agents write them; the preference pass (DPO) prefers the short ones.
OPENERS = {
    "order_status": ["Thanks so much for reaching out about your order. I'm happy to check on it for you."],
    "shipping_delay": ["Thanks for reaching out, and I'm so sorry your parcel is taking this long. I understand how "
                       "frustrating the wait is."],
    "refund": ["Thanks so much for reaching out about your refund. I understand, and I'm happy to help with it."],
    "partial_refund": ["Thanks for reaching out, and I'm so sorry something was missing. I understand how "
                       "disappointing that is."],
    "damaged_item": ["Thanks for reaching out, and I'm so sorry your item arrived damaged. I understand how "
                     "disappointing that is."],
    "cancellation": ["Thanks so much for reaching out about your order. I'm happy to help with the cancellation."],
    "address_change": ["Thanks so much for reaching out about your delivery address. I'm happy to help with that."],
    "account_lockout": ["Thanks for reaching out, and I'm so sorry you're locked out. I understand how stressful "
                        "that is."],
    "chargeback": ["Thanks so much for reaching out and letting us know about this. I understand it matters a lot."],
    "fraud_suspicion": ["Thanks so much for flagging this right away. I'm so sorry, I understand how worrying this "
                        "is."],
}
SECOND_OPENERS = ["Thanks so much for sending that over, I've found your order."]
SHORT_OPENERS = {  # what the demo's preference pairs choose over OPENERS
    "order_status": "Happy to check that.", "shipping_delay": "Sorry for the delay.",
    "refund": "Happy to help with your refund.", "partial_refund": "Sorry something was missing.",
    "damaged_item": "Sorry it arrived damaged.", "cancellation": "Happy to help.", "address_change": "Happy to help.",
    "account_lockout": "Sorry you're locked out.", "chargeback": "Thanks for letting us know.",
    "fraud_suspicion": "Thanks for flagging this right away.", "second_turn": "Thanks.",
}
ASK_ID = ["Could you share your order ID? It starts with HB-."]
TIMING = ["Refunds reach your account within {eta} business days."]
# Each decision is written after the fact and the rule it rests on ("7 days late, past our 5-day limit, so ..."),
# so the tokens that decide come after the tokens they depend on.
AMOUNT_RULE = {False: "{amount} is within our 200 sign-off limit.",
               True: "{amount} is over our 200 sign-off limit, so " + ESCALATION}

# category (+ variant key) -> sentence groups, each a list of options ("" = leave out)
BODY = {
    "order_status": [["Order {oid} uses {shipping} shipping, which takes {eta} business days from dispatch."]],
    "shipping_delay:late": [["Order {oid} with {all_items} is {days_late} days late, past our 5-day limit, so "
                             + ESCALATION],
                            ["Delayed parcels normally arrive within {eta} business days."]],
    "shipping_delay:calm": [["Order {oid} with {all_items} is {days_late} days late, within our 5-day limit, so it "
                             "stays with the carrier: delayed parcels arrive within {eta} business days."],
                            ["If it hasn't arrived by then, reply here and we'll trace it."]],
    "refund:due": [["Order {oid} was delivered {days} days ago, within our 30-day window, so you qualify for a full "
                    "refund of {amount}."]],
    "refund:late": [["Order {oid} was delivered {days} days ago, past our 30-day window, so I can't offer a refund."],
                    ["If the item is faulty, the manufacturer's warranty may still cover it."]],
    "partial_refund": [["{Affected} didn't arrive with order {oid}, so a partial refund of {amount} applies."]],
    "damaged_item": [["The {damaged} from order {oid} arrived broken, so a partial refund of {amount} applies."],
                     ["No need to send it back."]],
    "cancellation:open": [["Order {oid} hasn't shipped, so I've cancelled it with a full refund of {amount}."]],
    "cancellation:shipped": [["Order {oid} has already shipped, so it can't be cancelled now."],
                             ["Once it arrives, you can return it within 30 days for a refund."]],
    "address_change:open": [["Order {oid} hasn't shipped yet, so you can change the address under Orders > Edit "
                             "address until it ships."]],
    "address_change:shipped": [["Order {oid} has already shipped, so we can't change the address anymore."],
                               ["You can ask the carrier to redirect it from the tracking page."]],
    "account_lockout": [["For your security I can't unlock accounts in chat; please use the secure recovery page "
                         "at harbor.example/recover."]],
    "chargeback": [["Order {oid} ({total}) has an open chargeback with your bank, so we can't issue a separate "
                    "refund; your bank's decision settles it."], [ESCALATION]],
    "fraud_suspicion": [["I've flagged order {oid} ({total}, {all_items}) for our security team."],
                        ["Please secure your account at harbor.example/recover today."], [ESCALATION]],
}
# Lock-out tickets carry no order ID, so their customer turns are composed from parts (and a count or a day) to
# keep threads distinct: with a few fixed templates most of them were exact duplicates and curation dropped them.
LOCKOUT_PARTS = (
    ["I'm locked out of my account after {n} wrong password attempts", "My account says it's locked after {n} "
     "tries", "I forgot my password and now my account is locked", "My account got locked when I changed my "
     "password", "The login codes never arrive and now my account is locked", "I can't sign in, it says the account "
     "is locked", "After {n} failed logins my account is blocked", "My account was locked after a password reset"],
    ["on my phone", "on the app", "on my laptop", "on the website", "on my tablet", "on my work computer",
     "in the browser", "on my new phone"],
    ["since this morning", "since yesterday", "for {d} days now", "since last night", "since {weekday}",
     "for {h} hours", "since {weekday} evening", "all week"],
    ["How do I get back in?", "Please help.", "What should I do?", "Can you unlock it?", "I need to check an "
     "order.", "I have an order arriving soon.", "Is there a faster way?", "My saved cards are in there."])
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def _names(names: list[str]) -> str:
    """'the mug' or 'the mug and the lamp'."""
    return " and ".join(f"the {n}" for n in names)


def _a(name: str) -> str:
    return ("an " if name[0] in "aeiou" else "a ") + name


def context(facts: dict) -> dict:
    """Template fields derived from the facts (order ID, money strings, item lists)."""
    cur = facts["currency"]
    prices = {i["name"]: i["price"] for i in facts["items"]}
    affected = facts.get("affected_items", [])
    return {
        "oid": facts["order_id"], "shipping": facts.get("shipping"), "days_late": facts.get("days_late"),
        "days": facts.get("days_since_delivery"), "eta": facts["eta_days"],
        "total": money(facts["order_total"], cur) if facts["order_total"] else None,
        "amount": money(facts["refund_amount"], cur) if facts["refund_due"] else None,
        "affected": _names(affected), "Affected": _names(affected).capitalize(), "all_items": _names(list(prices)),
        "was": "were" if len(affected) > 1 else "was",
        "missing": " and ".join(f"the {n} ({money(prices[n], cur)})" for n in affected),
        "damaged": affected[0] if affected else None,
        "dprice": money(prices[affected[0]], cur) if affected else None,
        "items_text": " and ".join(f"{_a(n)} ({money(p, cur)})" for n, p in prices.items()),
    }


def lockout_turn(rng: random.Random) -> str:
    """A locked-out customer's message, composed from LOCKOUT_PARTS."""
    cause, device, since, ask = (rng.choice(part) for part in LOCKOUT_PARTS)
    since = since.format(d=rng.randint(2, 9), h=rng.randint(2, 12), weekday=rng.choice(WEEKDAYS))
    return f"{cause.format(n=rng.randint(3, 12))} {device} {since}. {ask}"


def user_turn(rng: random.Random, facts: dict, category: str, *, with_id: bool) -> str:
    """The customer's first message, quoting the order ID or not."""
    if category == "account_lockout":
        return lockout_turn(rng)
    with_ids, without = USER[category]
    ctx = {**context(facts), "ship_note": rng.choice(SHIP_NOTES[facts.get("shipped", False)])}
    return rng.choice(with_ids if with_id or not without else without).format(**ctx)


def give_id_turn(rng: random.Random, facts: dict) -> str:
    """The customer's follow-up that gives the order ID."""
    return rng.choice(GIVE_ID).format(oid=facts["order_id"])


def _body_key(facts: dict, category: str) -> str:
    if category == "refund":
        return "refund:due" if facts["refund_due"] else "refund:late"
    if category == "shipping_delay":
        return "shipping_delay:late" if facts["escalate"] else "shipping_delay:calm"
    if category in ("cancellation", "address_change"):
        return f"{category}:{'shipped' if facts['shipped'] else 'open'}"
    return category


def ask_reply(rng: random.Random, category: str) -> str:
    """Assistant turn asking for the missing order ID (policy rule 2), with the fraud warning where required."""
    parts = [rng.choice(OPENERS[category]), rng.choice(ASK_ID)]
    if category in FRAUD_WARNING_CATEGORIES:
        parts.append(FRAUD_WARNING)
    return " ".join(parts)


def short_opener(reply: str, category: str) -> str:
    """The same reply with its long opener (OPENERS, SECOND_OPENERS) replaced by the short one (SHORT_OPENERS).

    >>> short_opener(OPENERS["refund"][0] + " Order HB-1 was delivered 2 days ago.", "refund")
    'Happy to help with your refund. Order HB-1 was delivered 2 days ago.'
    """
    for long, short in ((OPENERS[category][0], SHORT_OPENERS[category]),
                        (SECOND_OPENERS[0], SHORT_OPENERS["second_turn"])):
        if reply.startswith(long):
            return short + reply[len(long):]
    return reply


def refund_block(offer: dict) -> str:
    """The fenced JSON block a refund offer travels in."""
    return "```json\n" + json.dumps(offer, ensure_ascii=False) + "\n```"


def gold_reply(rng: random.Random, facts: dict, category: str, *, second_turn: bool = False) -> str:
    """A policy-perfect resolving reply: opener, the facts and the rule each decision rests on, the decision
    (escalation included), the refund JSON, then its timing and the fraud warning."""
    ctx = context(facts)
    opener = rng.choice(SECOND_OPENERS if second_turn else OPENERS[category])
    before = [opener] + [rng.choice(group).format(**ctx) for group in BODY[_body_key(facts, category)]]
    offer = refund_offer(facts, category)
    after: list[str] = []
    if offer is not None:
        before.append(AMOUNT_RULE[facts["escalate"]].format(**ctx))
        after.append(rng.choice(TIMING).format(**ctx))
    if category in FRAUD_WARNING_CATEGORIES:
        after.append(FRAUD_WARNING)
    text = " ".join(s for s in before if s)
    if offer is not None:
        text += "\n\n" + refund_block(offer) + "\n\n"
    else:
        text += " "
    return (text + " ".join(s for s in after if s)).strip()
