"""A seeded, labelled synthetic PII set (support-chat sentences) for measuring the pii stage's precision and recall.

Each sample is (text, [(type, value), ...]). Negatives carry look-alikes that must not be flagged: order ids,
amounts, dates, times, tracking and non-Luhn card-length numbers, months and capitalized sentence starts.
Known limit, on purpose not sampled: a name outside the census lists mentioned with no cue ("ask Oluwaseun").
"""

from __future__ import annotations

import random

from .pii import find_pii, luhn_ok

FIRST = ["Maria", "James", "Jennifer", "Robert", "Linda", "Michael", "Susan", "Daniel", "Karen", "Thomas", "Nancy",
         "Kevin", "Laura", "Brian", "Emily", "Jason", "Megan", "Eric", "Rachel", "Steven"]
FOREIGN_FIRST = ["Priya", "Kwame", "Yuki", "Oluwaseun", "Ingrid", "Mateo", "Aisha", "Chen", "Leila", "Amara", "Soren",
                 "Fatima", "Jonas", "Mei", "Tariq", "Zanele"]
LAST = ["Smith", "Garcia", "Johnson", "Nguyen", "Patel", "Brown", "Khan", "Lopez", "Kim", "Muller", "Okafor", "Rossi",
        "Silva", "Tanaka", "Novak", "Hassan"]
STREETS = ["Maple", "Oak", "Baker", "Station", "Mill", "Church", "Lake", "Park", "Elm", "Cedar", "River", "Hill"]
KINDS = ["Street", "St", "Avenue", "Ave", "Road", "Rd", "Lane", "Drive", "Boulevard", "Court"]
CITIES = [("Springfield", "IL", "62704"), ("Portland", "OR", "97205"), ("Austin", "TX", "78701"),
          ("Denver", "CO", "80202"), ("Madison", "WI", "53703")]
DOMAINS = ["gmail.com", "outlook.com", "example.org", "mail.co.uk", "proton.me", "company.io"]

TEMPLATES = {
    "EMAIL": ["You can reach me at {v}.", "My email is {v}, thanks.", "(account email: {v})", "send it to {v} please"],
    "PHONE": ["My number is {v}.", "Call me on {v} if needed.", "phone: {v}", "Text {v} when it ships."],
    "CARD": ["I paid with card {v}.", "The card I used is {v}.", "charged twice on {v} yesterday"],
    "IP": ["I tried logging in from {v}.", "My IP is {v} if that helps.", "blocked login from {v} again"],
    "SSN": ["My SSN is {v}.", "they asked for my social security number {v}"],
    "ADDRESS": ["I live at {v}.", "Please ship to {v} instead.", "My address is {v}."],
    "PERSON": ["Thanks, {v}", "Hi, my name is {v} and my order is late.", "This is {v}.",
               "Dear {v}, your refund is done.",
               "Please ask {v} to call me back.", "Regards,\n{v}", "Mr. {v} said the parcel was open."],
}
NEGATIVES = [
    "Order HB-{n6} was shipped on 2024-05-{d2} at 10:{d2}.", "The total was {n3}.{d2} USD for {n1} items.",
    "Tracking number 1Z999AA1{n8} shows it in Memphis.", "My order number is {n10}, can you check it?",
    "Reference #{n7} for the return.", "It should arrive in May, or June at the latest.",
    "Will you refund the shipping too? Grace period is 30 days, right?", "Version 2.3.{n1} of the app crashes.",
    "Chase sent me a fraud alert about a charge of {n3} dollars.", "Please read section 4.2.{n1} of the policy.",
    "The code {n16x} did not work at checkout.", "Mark this ticket as urgent, the box was crushed.",
    "I ordered 3 blue mugs and 2 plates on Monday.", "The discount code SPRING{n2} expired on the 1st.",
]


def _digits(rng: random.Random, n: int) -> str:
    return "".join(str(rng.randint(0, 9)) for _ in range(n))


def make_card(rng: random.Random) -> str:
    """A Luhn-valid 16-digit (or 15-digit Amex) number grouped with spaces, dashes or nothing."""
    amex = rng.random() < 0.25
    n, prefix = (15, "37") if amex else (16, rng.choice("45"))
    body = prefix + _digits(rng, n - len(prefix) - 1)
    digits = next(body + str(c) for c in range(10) if luhn_ok(body + str(c)))
    sep = rng.choice((" ", "-", ""))
    groups = (4, 6, 5) if n == 15 else (4, 4, 4, 4)
    parts, i = [], 0
    for g in groups:
        parts.append(digits[i:i + g])
        i += g
    return sep.join(parts)


def make_value(rng: random.Random, kind: str) -> str:
    """One fake value of `kind`."""
    if kind == "EMAIL":
        return f"{rng.choice(FIRST + FOREIGN_FIRST).lower()}.{rng.choice(LAST).lower()}{rng.randint(1, 99)}@" \
               f"{rng.choice(DOMAINS)}"
    if kind == "PHONE":
        a, b, c = rng.randint(201, 989), rng.randint(200, 989), rng.randint(0, 9999)
        return rng.choice([f"({a}) {b}-{c:04d}", f"{a}-{b}-{c:04d}", f"+1 {a} {b} {c:04d}", f"{a}.{b}.{c:04d}",
                           f"+44 20 {rng.randint(7000, 7999)} {c:04d}", f"+49 30 {rng.randint(1000000, 9999999)}"])
    if kind == "CARD":
        return make_card(rng)
    if kind == "IP":
        if rng.random() < 0.2:
            return f"2001:db8:{rng.randint(1, 9999):x}::{rng.randint(1, 999):x}"
        return ".".join(str(rng.randint(1, 254)) for _ in range(4))
    if kind == "SSN":
        return f"{rng.randint(100, 665)}-{rng.randint(10, 99)}-{rng.randint(1000, 9999)}"
    if kind == "ADDRESS":
        city, state, zip_ = rng.choice(CITIES)
        base = f"{rng.randint(2, 9800)} {rng.choice(STREETS)} {rng.choice(KINDS)}"
        return rng.choice([base, f"{base}, {city}, {state} {zip_}", f"{base}, Apt {rng.randint(1, 40)}"])
    if kind == "PERSON":
        return f"{rng.choice(FIRST + FOREIGN_FIRST)} {rng.choice(LAST)}" if rng.random() < 0.7 else rng.choice(FIRST)
    raise ValueError(f"unknown kind {kind!r}; allowed: {', '.join(TEMPLATES)}")


def make_set(n: int = 600, seed: int = 0) -> list[tuple[str, list[tuple[str, str]]]]:
    """`n` samples of one or two PII sentences plus a look-alike sentence, or a look-alike alone (1 in 4)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        neg = rng.choice(NEGATIVES).format(n1=rng.randint(1, 9), d2=f"{rng.randint(10, 28)}", n2=_digits(rng, 2),
                                           n3=rng.randint(100, 999), n6=_digits(rng, 6), n7=_digits(rng, 7),
                                           n8=_digits(rng, 8), n10=_digits(rng, 10), n16x=_digits(rng, 15) + "0")
        if rng.random() < 0.25:
            out.append((neg, []))
            continue
        labels, parts = [], []
        for kind in rng.sample(sorted(TEMPLATES), rng.choice((1, 1, 2))):
            value = make_value(rng, kind)
            template = rng.choice(TEMPLATES[kind])
            if kind == "PERSON" and value in FIRST and "{v}," in template:
                template = "Thanks, {v}"
            parts.append(template.format(v=value))
            labels.append((kind, value))
        parts.insert(rng.randint(0, len(parts)), neg)
        out.append((" ".join(parts), labels))
    return out


def score(samples, types=None) -> dict[str, float]:
    """Recall (labelled values covered by a span of their type) and precision (spans that hit a labelled value)."""
    hit = total = good = spans_n = 0
    for text, labels in samples:
        spans = find_pii(text, types) if types else find_pii(text)
        for kind, value in labels:
            total += 1
            start = text.find(value)
            hit += any(s.type == kind and s.start <= start and start + len(value) <= s.end for s in spans)
        for s in spans:
            spans_n += 1
            good += any(s.type == k and (s.value in v or v in s.value) for k, v in labels)
    return {"recall": hit / total if total else 1.0, "precision": good / spans_n if spans_n else 1.0,
            "values": total, "spans": spans_n}


def score_by_type(rows, find=find_pii) -> dict[str, dict]:
    """Per-type recall and precision of `find` on labelled rows ({"text", "spans": [{"start", "end", "type"}]}).

    A labelled span is found when spans of its type cover all of its non-space characters; a detected span is
    correct when at least half of its non-space characters lie inside labelled spans of its type.

    >>> score_by_type([{"text": "I'm Kenji Okafor", "spans": [{"start": 4, "end": 16, "type": "PERSON"}]}])
    {'PERSON': {'labelled': 1, 'found': 1, 'detected': 1, 'correct': 1, 'recall': 1.0, 'precision': 1.0}}
    """
    counts: dict[str, list[int]] = {}
    for row in rows:
        text = row["text"]
        gold: dict[str, set[int]] = {}
        for g in row["spans"]:
            gold.setdefault(g["type"], set()).update(range(g["start"], g["end"]))
        detected = find(text)
        hit: dict[str, set[int]] = {}
        for s in detected:
            hit.setdefault(s.type, set()).update(range(s.start, s.end))
        for g in row["spans"]:
            c = counts.setdefault(g["type"], [0, 0, 0, 0])
            chars = [i for i in range(g["start"], g["end"]) if not text[i].isspace()]
            c[0] += 1
            c[1] += all(i in hit.get(g["type"], ()) for i in chars)
        for s in detected:
            c = counts.setdefault(s.type, [0, 0, 0, 0])
            chars = [i for i in range(s.start, s.end) if not text[i].isspace()]
            c[2] += 1
            c[3] += 2 * sum(i in gold.get(s.type, ()) for i in chars) >= len(chars)
    return {t: {"labelled": c[0], "found": c[1], "detected": c[2], "correct": c[3],
                "recall": round(c[1] / c[0], 4) if c[0] else 1.0, "precision": round(c[3] / c[2], 4) if c[2] else 1.0}
            for t, c in sorted(counts.items())}
