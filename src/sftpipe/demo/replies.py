"""Customer turns and gold assistant replies for Harbor tickets, from the facts.

Several templates per part vary the phrasing; the policy-mandated parts (order ID, refund JSON, fraud warning,
escalation sentence, ETA wording) are exact. Replies are kept short (about 20-80 words) for a 135M model on a CPU.
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
    "account_lockout": (
        ["I'm locked out of my account after too many password attempts.", "My account says it's locked. How do I "
         "get back in?", "can't log in, it says my account is locked. help", "I forgot my password and now my "
         "account is locked."], []),
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

OPENERS = {
    "order_status": ["Happy to check that.", "Let me look into that.", "Sure, here's where it stands."],
    "shipping_delay": ["Sorry your parcel is running late.", "I'm sorry about the wait.", "Sorry for the delay."],
    "refund": ["Happy to help with your refund.", "Let me check that for you.", "Sure, let's sort this out."],
    "partial_refund": ["Sorry something was missing.", "Sorry your parcel came incomplete.", "Let's fix that."],
    "damaged_item": ["Sorry it arrived damaged.", "That's disappointing, sorry.", "Sorry about the breakage."],
    "cancellation": ["Let me check that.", "Sure, let me look.", "Happy to help."],
    "address_change": ["Happy to help.", "Let me check.", "Sure thing."],
    "account_lockout": ["Sorry you're locked out.", "Let's get you back in.", "Happy to help you log in again."],
    "chargeback": ["Thanks for letting us know.", "Understood, thanks.", "Thanks for the heads-up."],
    "fraud_suspicion": ["Thanks for flagging this right away.", "Sorry, that's worrying.", "Good call reporting this."],
}
SECOND_OPENERS = ["Thanks.", "Got it, thanks.", "Thanks, found it."]
ASK_ID = ["Could you share your order ID? It starts with HB-.", "What's the order ID? You'll find it in your "
          "confirmation email.", "Could you send me the order ID from your confirmation email?"]
TIMING = ["Refunds reach your account within {eta} business days.", "Expect the money back within {eta} business "
          "days.", "The refund takes up to {eta} business days to show up."]
OVER_LIMIT = ["Refunds over 200 need a specialist's sign-off.", "Refunds this large need a specialist's approval."]

# category (+ variant key) -> list of alternative sentence groups, each a list of options ("" = leave out)
BODY = {
    "order_status": [["Order {oid} uses {shipping} shipping, which takes {eta} business days from dispatch.",
                      "I've checked {oid}: {shipping} delivery arrives within {eta} business days of dispatch.",
                      "For order {oid}, {shipping} shipping takes up to {eta} business days after dispatch."],
                     ["The tracking link in your confirmation email shows each step.", "You'll get an email when "
                      "it's out for delivery.", ""]],
    "shipping_delay": [["Order {oid} is held up with the carrier; delayed parcels normally arrive within {eta} "
                        "business days.", "I've checked {oid}: the carrier is running late, so expect it within "
                        "{eta} business days.", "Order {oid} is delayed in transit and should reach you within "
                        "{eta} business days."]],
    "shipping_delay:calm": [["If it hasn't arrived by then, reply here and we'll trace it.", "If it's not there by "
                             "then, let us know and we'll open a trace.", ""]],
    "refund:due": [["Order {oid} is within our 30-day return window, so you qualify for a full refund of {amount}.",
                    "Order {oid} was delivered {days} days ago, inside the 30-day window, so a full refund of "
                    "{amount} applies.", "Since order {oid} arrived within the last 30 days, I can offer a full "
                    "refund of {amount}."]],
    "refund:late": [["Order {oid} was delivered {days} days ago, which is past our 30-day refund window, so I "
                     "can't offer a refund.", "I'm afraid order {oid} is outside the 30-day return window ({days} "
                     "days since delivery), so a refund isn't possible."],
                    ["If the item is faulty, the manufacturer's warranty may still cover it.", ""]],
    "partial_refund": [["For order {oid}, you'll get a partial refund of {amount} for {affected}.", "I've noted "
                        "that {affected} didn't arrive with {oid}, so a partial refund of {amount} applies.",
                        "I can refund {amount} for {affected} missing from order {oid}."]],
    "damaged_item": [["For order {oid}, I can refund the {damaged}: {amount}.", "I'll arrange a partial refund of "
                      "{amount} for the {damaged} from order {oid}.", "Order {oid}: the broken {damaged} qualifies "
                      "for a partial refund of {amount}."], ["No need to send it back.", ""]],
    "cancellation:open": [["Order {oid} hadn't shipped, so I've cancelled it with a full refund of {amount}.",
                           "Done: order {oid} is cancelled before dispatch, with a full refund of {amount}."]],
    "cancellation:shipped": [["Order {oid} has already shipped, so it can't be cancelled now.", "I'm afraid order "
                              "{oid} is already on its way and can't be cancelled."],
                             ["Once it arrives, you can return it within 30 days for a refund.", "You can return "
                              "it within 30 days of delivery instead."]],
    "address_change:open": [["Order {oid} hasn't shipped yet, so you can change the address under Orders > Edit "
                             "address.", "You can still update the address for {oid} under Orders > Edit address "
                             "until it ships."], ["Do it soon, since the option closes at dispatch.", ""]],
    "address_change:shipped": [["Order {oid} has already shipped, so we can't change the address anymore.",
                                "Since {oid} is already in transit, the address can't be edited on our side."],
                               ["The carrier's tracking page lets you redirect the parcel.", "You can ask the "
                                "carrier to redirect it from the tracking page."]],
    "account_lockout": [["For your security I can't unlock accounts in chat; please use the secure recovery page "
                         "at harbor.example/recover.", "Please reset your password on the secure recovery page at "
                         "harbor.example/recover, since I can't unlock accounts from chat.", "The safe way back in "
                         "is the secure recovery page at harbor.example/recover, which verifies your identity."]],
    "chargeback": [["I see the open bank dispute on order {oid}.", "Order {oid} has an open chargeback with your "
                    "bank."], ["While a chargeback is open we can't issue a separate refund; your bank's decision "
                               "settles it.", "We can't refund on top of an open chargeback, so the bank will "
                               "decide the outcome."]],
    "fraud_suspicion": [["I've flagged order {oid} for our security team.", "Order {oid} is now marked as possibly "
                         "fraudulent."], ["Please change your password at harbor.example/recover now.", "Please "
                                          "secure your account at harbor.example/recover today."]],
}


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
        "affected": _names(affected), "was": "were" if len(affected) > 1 else "was",
        "missing": " and ".join(f"the {n} ({money(prices[n], cur)})" for n in affected),
        "damaged": affected[0] if affected else None,
        "dprice": money(prices[affected[0]], cur) if affected else None,
        "items_text": " and ".join(f"{_a(n)} ({money(p, cur)})" for n, p in prices.items()),
    }


def user_turn(rng: random.Random, facts: dict, category: str, *, with_id: bool) -> str:
    """The customer's first message, quoting the order ID or not."""
    with_ids, without = USER[category]
    ctx = {**context(facts), "ship_note": rng.choice(SHIP_NOTES[facts.get("shipped", False)])}
    return rng.choice(with_ids if with_id or not without else without).format(**ctx)


def give_id_turn(rng: random.Random, facts: dict) -> str:
    """The customer's follow-up that gives the order ID."""
    return rng.choice(GIVE_ID).format(oid=facts["order_id"])


def _body_key(facts: dict, category: str) -> str:
    if category == "refund":
        return "refund:due" if facts["refund_due"] else "refund:late"
    if category in ("cancellation", "address_change"):
        return f"{category}:{'shipped' if facts['shipped'] else 'open'}"
    return category


def ask_reply(rng: random.Random, category: str) -> str:
    """Assistant turn asking for the missing order ID (policy rule 2), with the fraud warning where required."""
    parts = [rng.choice(OPENERS[category]), rng.choice(ASK_ID)]
    if category in FRAUD_WARNING_CATEGORIES:
        parts.append(FRAUD_WARNING)
    return " ".join(parts)


def refund_block(offer: dict) -> str:
    """The fenced JSON block a refund offer travels in."""
    return "```json\n" + json.dumps(offer, ensure_ascii=False) + "\n```"


def gold_reply(rng: random.Random, facts: dict, category: str, *, second_turn: bool = False) -> str:
    """A policy-perfect resolving reply: opener, body, refund JSON, timing, escalation, fraud warning."""
    ctx = context(facts)
    opener = rng.choice(SECOND_OPENERS if second_turn else OPENERS[category])
    before = [opener] + [rng.choice(group).format(**ctx) for group in BODY[_body_key(facts, category)]]
    after: list[str] = []
    offer = refund_offer(facts, category)
    if offer is not None:
        after.append(rng.choice(TIMING).format(**ctx))
        if facts["escalate"]:
            after.append(rng.choice(OVER_LIMIT))
    if category == "shipping_delay" and not facts["escalate"]:
        before.append(rng.choice(BODY["shipping_delay:calm"][0]))
    if facts["escalate"]:
        after.append(ESCALATION)
    if category in FRAUD_WARNING_CATEGORIES:
        after.append(FRAUD_WARNING)
    text = " ".join(s for s in before if s)
    if offer is not None:
        text += "\n\n" + refund_block(offer) + "\n\n"
    else:
        text += " "
    return (text + " ".join(s for s in after if s)).strip()
