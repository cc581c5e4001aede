"""Ticket facts for the Harbor demo: category, order, items, and what the policy says the reply must do.

The facts are the ground truth of a ticket: the generator writes replies from them and eval checks replies against
them (refund amount, eta, escalate or not). All money is computed in integer cents, so amounts are exact.

Fields: order_id ("HB-482913", None for account_lockout), customer {name, email} (for PII noise only), currency,
items [{name, price}], order_total, refund_due, refund_type (full|partial|None), refund_amount, eta_days (refund
or delivery ETA, None where none applies), escalate, order_id_given (the first user turn quotes the order ID),
plus per category: shipping, days_late, days_since_delivery, affected_items, shipped.
"""

from __future__ import annotations

import random

from .policy import LIMITS

# Skewed issue-type frequencies (percent of threads), with a floor for the rare ones: order_status is ~6x more
# common than chargeback. Without the floor (1.5-2.5%) a CPU-sized run saw ~10 examples of a rare category and
# wrote a frequent category's reply for it.
CATEGORY_WEIGHTS: dict[str, float] = {
    "order_status": 26, "shipping_delay": 16, "refund": 13, "address_change": 8, "cancellation": 8,
    "damaged_item": 7, "partial_refund": 7, "account_lockout": 5.5, "chargeback": 4.5, "fraud_suspicion": 5,
}
CATEGORIES = tuple(CATEGORY_WEIGHTS)
CURRENCIES = ("USD", "EUR", "GBP")
ITEMS = (
    "ceramic mug", "desk lamp", "wool scarf", "water bottle", "phone case", "notebook set", "bluetooth speaker",
    "yoga mat", "coffee grinder", "backpack", "headphones", "throw blanket", "plant pot", "kitchen scale",
    "travel pillow", "umbrella", "wall clock", "cutting board", "tea kettle", "desk organizer", "picture frame",
    "running socks", "laptop stand", "candle set", "bath towel", "pepper mill", "wireless mouse", "lunch box",
)
FIRST_NAMES = (
    "Maria", "James", "Aisha", "Chen", "Lucas", "Priya", "Olivia", "Mateo", "Fatima", "Noah", "Yuki", "Emma",
    "Kwame", "Sofia", "Liam", "Ingrid", "Omar", "Hannah", "Diego", "Mei", "Jonas", "Amara", "Ethan", "Leila",
)
LAST_NAMES = (
    "Lopez", "Smith", "Khan", "Wang", "Martin", "Patel", "Brown", "Garcia", "Hassan", "Muller", "Tanaka",
    "Johnson", "Mensah", "Rossi", "Nielsen", "Dubois", "Okafor", "Novak", "Silva", "Kim", "Schmidt", "Ahmed",
)
EMAIL_DOMAINS = ("gmail.com", "outlook.com", "yahoo.com", "proton.me", "icloud.com", "web.de")

# The numbers of the policy live in assets/rules.yaml; the generator and the checker read the same ones.
WINDOW_DAYS: int = LIMITS["refund_window_days"]
ESCALATE_AMOUNT_OVER: int = LIMITS["escalate_amount_over"]
ESCALATE_DAYS_LATE_OVER: int = LIMITS["escalate_days_late_over"]
ETA: dict[str, int] = LIMITS["eta_days"]
REFUND_REASONS = {
    "refund": "returned within 30 days", "partial_refund": "missing items", "damaged_item": "damaged item",
    "cancellation": "cancelled before shipping",
}


def money(amount: float, currency: str) -> str:
    """Format an amount the way replies and user turns show it.

    >>> money(12.5, "EUR")
    '12.50 EUR'
    """
    return f"{amount:.2f} {currency}"


def make_customer(rng: random.Random) -> dict[str, str]:
    """A fake customer (name and email) used only for PII noise."""
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    suffix = rng.choice(["", "", str(rng.randint(1, 99))])
    return {"name": f"{first} {last}", "email": f"{first}.{last}{suffix}@{rng.choice(EMAIL_DOMAINS)}".lower()}


def _items(rng: random.Random, n: int) -> list[dict]:
    names = rng.sample(ITEMS, n)
    return [{"name": name, "price": rng.randint(5, 160) * 100 + rng.choice((0, 0, 50, 99, 95))} for name in names]


def _apply_refund(facts: dict, kind: str, cents: int) -> None:
    """Fill refund fields per policy rules 5, 7, 8: amount, type, eta_days, escalate."""
    escalate = cents > ESCALATE_AMOUNT_OVER * 100
    facts.update(refund_due=True, refund_type=kind, refund_amount=cents / 100, escalate=escalate,
                 eta_days=ETA["escalated_refund"] if escalate else ETA[kind])


def make_facts(rng: random.Random, category: str) -> dict:
    """The facts of one ticket of `category`, with the policy outcome (refund, eta_days, escalate) worked out.

    >>> f = make_facts(random.Random(1), "chargeback")
    >>> (f["refund_due"], f["escalate"], f["order_id"][:3])
    (False, True, 'HB-')
    """
    if category not in CATEGORY_WEIGHTS:
        raise ValueError(f"unknown category {category!r}; allowed: {', '.join(CATEGORIES)}")
    n_items = {"partial_refund": rng.randint(2, 4), "damaged_item": rng.randint(1, 3)}.get(category,
                                                                                          rng.randint(1, 3))
    items = [] if category == "account_lockout" else _items(rng, n_items)
    total = sum(i["price"] for i in items)
    facts: dict = {
        "order_id": None if category == "account_lockout" else f"HB-{rng.randint(100000, 999999)}",
        "customer": make_customer(rng),
        "currency": rng.choice(CURRENCIES),
        "items": [{"name": i["name"], "price": i["price"] / 100} for i in items],
        "order_total": total / 100 if items else None,
        "refund_due": False, "refund_type": None, "refund_amount": None, "eta_days": None, "escalate": False,
        "order_id_given": category != "account_lockout",
    }
    if category == "order_status":
        facts["shipping"] = rng.choice(("standard", "standard", "express"))
        facts["eta_days"] = ETA[facts["shipping"]]
    elif category == "shipping_delay":
        facts["days_late"] = rng.randint(2, 10)
        facts["eta_days"] = ETA["delayed"]
        facts["escalate"] = facts["days_late"] > ESCALATE_DAYS_LATE_OVER
    elif category == "refund":
        facts["days_since_delivery"] = rng.randint(2, WINDOW_DAYS) if rng.random() < 0.7 else rng.randint(31, 60)
        if facts["days_since_delivery"] <= WINDOW_DAYS:
            _apply_refund(facts, "full", total)
    elif category in ("partial_refund", "damaged_item"):
        k = 2 if category == "partial_refund" and len(items) >= 3 and rng.random() < 0.3 else 1
        affected = rng.sample(items, k) if category == "partial_refund" else [rng.choice(items)]
        facts["affected_items"] = [i["name"] for i in affected]
        _apply_refund(facts, "partial", sum(i["price"] for i in affected))
    elif category in ("cancellation", "address_change"):
        facts["shipped"] = rng.random() < 0.4
        if category == "cancellation" and not facts["shipped"]:
            _apply_refund(facts, "full", total)
    elif category in ("chargeback", "fraud_suspicion"):
        facts["escalate"] = True
    return facts


def refund_offer(facts: dict, category: str) -> dict | None:
    """The refund JSON object the policy requires for these facts, or None when no refund is due."""
    if not facts["refund_due"]:
        return None
    return {"order_id": facts["order_id"], "amount": facts["refund_amount"], "currency": facts["currency"],
            "type": facts["refund_type"], "reason": REFUND_REASONS[category], "eta_days": facts["eta_days"]}


def allocate(n: int, weights: dict[str, float]) -> dict[str, int]:
    """Split n into integer counts proportional to weights (largest remainder), deterministic.

    >>> allocate(10, {"a": 3, "b": 1})
    {'a': 8, 'b': 2}
    """
    total = sum(weights.values())
    exact = {k: n * w / total for k, w in weights.items()}
    counts = {k: int(v) for k, v in exact.items()}
    by_remainder = sorted(weights, key=lambda k: (-(exact[k] - counts[k]), list(weights).index(k)))
    for k in by_remainder[: n - sum(counts.values())]:
        counts[k] += 1
    return counts
