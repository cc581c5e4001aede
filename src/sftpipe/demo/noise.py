"""Noise injectors for the raw Harbor export: PII, near-duplicate edits, other languages, broken replies.

Each injector mutates one thread (a dict with `messages`, `facts`, `category`) and returns nothing; the generator
records the label in the noise manifest. Injectors that break the policy always produce a reply that
`policy.check_thread` flags.
"""

from __future__ import annotations

import json
import random
import re

from .facts import FIRST_NAMES, money
from .policy import FRAUD_WARNING
from .replies import TIMING

STREETS = ("Maple", "Harbor", "Oak", "Station", "Mill", "Church", "Lake", "Park", "King", "Rose")
STREET_KINDS = ("Street", "Avenue", "Road", "Lane", "Drive")
CITIES = (("Springfield", "62704"), ("Portland", "97205"), ("Leeds", "LS1 4AP"), ("Lyon", "69002"),
          ("Hamburg", "20095"), ("Porto", "4000-123"), ("Austin", "78701"), ("Dublin", "D02 X285"))
PII_SENTENCES = {
    "email": ["You can reach me at {v}.", "My email is {v}.", "(account email: {v})"],
    "phone": ["My number is {v}.", "Call me on {v} if needed."],
    "card": ["I paid with card {v}.", "The card I used is {v}."],
    "name": ["This is {v}.", "Thanks, {v}"],
    "address": ["I live at {v}.", "My address is {v}."],
    "ip": ["I tried logging in from {v}.", "My IP is {v} if that helps."],
}
TOXIC_USER = ["Your company is run by idiots.", "Honestly, you people are useless.", "What a pathetic service.",
              "Shut up with the scripts and fix this."]
TOXIC_ASSISTANT = ["Honestly, that's a pretty stupid question.", "Not sure why this is so hard, it's dumb simple.",
                   "You people are so annoying."]
INSTANT = ["Good news: I've issued an instant refund, so the money is back in your account right away.",
           "Your refund has been processed immediately, no waiting needed.", "You'll be refunded instantly, today."]
BOILERPLATE = [
    ["Thank you for contacting Harbor Support. We truly value you as a customer and appreciate the opportunity to "
     "assist you today. Your satisfaction is our top priority.",
     "We understand how important your order is to you, and we sincerely apologize for any inconvenience this may "
     "have caused. Our dedicated team works hard every day to give you the best possible experience.",
     "We have carefully reviewed your request and are happy to provide the following information regarding your "
     "inquiry."],
    ["Thank you for contacting Harbor Support! We truly value your loyalty and are delighted to hear from you. "
     "Please know that your satisfaction is our priority.",
     "We sincerely apologize for any inconvenience you may have experienced. At Harbor, we strive to exceed "
     "expectations and we take every message from our valued customers very seriously.",
     "Having reviewed the details of your inquiry, we are pleased to share the following update with you."],
]
# language -> (shipping words, user templates, assistant templates); all are order_status threads
FOREIGN = {
    "es": ({"standard": "estándar", "express": "exprés"},
           ["Hola, ¿dónde está mi pedido {oid}? Elegí el envío {ship}.", "¿Cuándo llegará mi pedido {oid}? Pagué el "
            "envío {ship}."],
           ["Con gusto lo reviso. El pedido {oid} usa envío {ship}, que tarda {eta} días hábiles desde el despacho. "
            "Recibirás un correo cuando esté en reparto.", "Claro. Tu pedido {oid} va con envío {ship} y llegará en "
            "{eta} días hábiles después del despacho."]),
    "fr": ({"standard": "standard", "express": "express"},
           ["Bonjour, où en est ma commande {oid} ? J'ai choisi la livraison {ship}.", "Quand ma commande {oid} "
            "va-t-elle arriver ? J'ai payé la livraison {ship}."],
           ["Je vérifie volontiers. La commande {oid} est en livraison {ship}, qui prend {eta} jours ouvrés après "
            "l'expédition. Vous recevrez un e-mail dès qu'elle sera en cours de livraison.", "Bien sûr. Votre "
            "commande {oid} arrivera sous {eta} jours ouvrés après l'expédition, avec la livraison {ship}."]),
    "de": ({"standard": "Standardversand", "express": "Expressversand"},
           ["Hallo, wo ist meine Bestellung {oid}? Ich habe {ship} gewählt.", "Wann kommt meine Bestellung {oid} "
            "an? Ich habe für {ship} bezahlt."],
           ["Gerne prüfe ich das. Die Bestellung {oid} kommt per {ship}, das dauert {eta} Werktage ab Versand. Sie "
            "bekommen eine E-Mail, sobald sie zugestellt wird.", "Natürlich. Ihre Bestellung {oid} wird mit {ship} "
            "innerhalb von {eta} Werktagen nach dem Versand geliefert."]),
    "pt": ({"standard": "padrão", "express": "expresso"},
           ["Olá, onde está o meu pedido {oid}? Escolhi o envio {ship}.", "Quando chega o meu pedido {oid}? Paguei "
            "pelo envio {ship}."],
           ["Claro, vou verificar. O pedido {oid} usa envio {ship}, que leva {eta} dias úteis após o despacho. Você "
            "receberá um e-mail quando sair para entrega.", "Com certeza. O seu pedido {oid} chega em {eta} dias "
            "úteis depois do despacho, com envio {ship}."]),
}
NEAR_DUP_WORDS = {"order": "purchase", "Hi": "Hello", "hey": "hi", "package": "parcel", "parcel": "package",
                  "arrived": "came", "still": "really", "Please": "Pls", "please": "pls", "locked": "blocked"}


def luhn_valid(number: str) -> bool:
    """True if the digits of `number` (spaces and dashes ignored) pass the Luhn checksum.

    >>> luhn_valid("4539 1488 0343 6467"), luhn_valid("4539 1488 0343 6468")
    (True, False)
    """
    digits = [int(c) for c in number if c.isdigit()]
    total = sum(d if i % 2 == 0 else (d * 2 - 9 if d > 4 else d * 2) for i, d in enumerate(reversed(digits)))
    return bool(digits) and total % 10 == 0


def make_card(rng: random.Random) -> str:
    """A 16-digit Visa/Mastercard-looking number that passes Luhn, grouped with spaces, dashes or nothing."""
    body = [rng.choice((4, 5))] + [rng.randint(0, 9) for _ in range(14)]
    check = next(d for d in range(10) if luhn_valid("".join(map(str, body + [d]))))
    digits = "".join(map(str, body + [check]))
    sep = rng.choice((" ", "-", ""))
    return sep.join(digits[i:i + 4] for i in range(0, 16, 4))


def make_pii(rng: random.Random, kind: str, customer: dict) -> str:
    """A fake PII value of `kind` (email, phone, card, name, address, ip) for this customer."""
    if kind == "email":
        return customer["email"]
    if kind == "name":
        return customer["name"]
    if kind == "card":
        return make_card(rng)
    if kind == "phone":
        return rng.choice([f"+1 {rng.randint(201, 989)}-555-{rng.randint(0, 9999):04d}",
                           f"({rng.randint(201, 989)}) 555-{rng.randint(0, 9999):04d}",
                           f"+44 20 {rng.randint(7000, 7999)} {rng.randint(0, 9999):04d}",
                           f"+49 30 {rng.randint(1000000, 9999999)}"])
    if kind == "address":
        city, postcode = rng.choice(CITIES)
        return f"{rng.randint(2, 980)} {rng.choice(STREETS)} {rng.choice(STREET_KINDS)}, {city} {postcode}"
    if kind == "ip":
        return f"{rng.randint(23, 217)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
    raise ValueError(f"unknown PII kind {kind!r}; allowed: {', '.join(PII_SENTENCES)}")


def _user_idx(thread: dict) -> int:
    return next(i for i, m in enumerate(thread["messages"]) if m["role"] == "user")


def _last_assistant(thread: dict) -> dict:
    return [m for m in thread["messages"] if m["role"] == "assistant"][-1]


def inject_pii(rng: random.Random, thread: dict) -> list[dict]:
    """Add 1-2 PII values to the first user turn and sometimes to an assistant turn; returns their ground truth."""
    customer, found = thread["facts"]["customer"], []
    ui = _user_idx(thread)
    for kind in rng.sample(sorted(PII_SENTENCES), rng.choice((1, 1, 2))):
        value = make_pii(rng, kind, customer)
        sentence = rng.choice(PII_SENTENCES[kind]).format(v=value)
        msg = thread["messages"][ui]
        msg["content"] = f"{sentence} {msg['content']}" if sentence.startswith("This is") \
            else f"{msg['content']} {sentence}"
        found.append({"kind": kind, "value": value, "message_index": ui})
    if rng.random() < 0.3:
        ai = len(thread["messages"]) - 1
        name = customer["name"] if rng.random() < 0.5 else customer["name"].split()[0]
        thread["messages"][ai]["content"] = f"Hi {name}! " + thread["messages"][ai]["content"]
        found.append({"kind": "name", "value": name, "message_index": ai})
    return found


def near_duplicate(rng: random.Random, thread: dict) -> None:
    """Make a small edit to the first user turn (a word swapped, punctuation changed, a filler added)."""
    msg = thread["messages"][_user_idx(thread)]
    original = msg["content"]
    while msg["content"] == original:
        op = rng.choice(("word", "punct", "filler"))
        text = msg["content"]
        if op == "word":
            words = [w for w in NEAR_DUP_WORDS if re.search(rf"\b{w}\b", text)]
            if words:
                w = rng.choice(words)
                text = re.sub(rf"\b{w}\b", NEAR_DUP_WORDS[w], text, count=1)
        elif op == "punct":
            text = text[:-1] + rng.choice(("!", "??", "...")) if text[-1] in ".?!" else text + "?"
        else:
            text = rng.choice(("Hello, ", "Hi again. ")) + text if rng.random() < 0.5 else text + " Thanks."
        msg["content"] = text


def make_foreign(rng: random.Random, thread: dict) -> str:
    """Rewrite an order_status thread in Spanish, French, German or Portuguese; returns the language code."""
    lang = rng.choice(sorted(FOREIGN))
    ships, users, replies = FOREIGN[lang]
    facts = thread["facts"]
    ctx = {"oid": facts["order_id"], "ship": ships[facts["shipping"]], "eta": facts["eta_days"]}
    system = thread["messages"][0]
    thread["messages"] = [system, {"role": "user", "content": rng.choice(users).format(**ctx)},
                          {"role": "assistant", "content": rng.choice(replies).format(**ctx)}]
    return lang


def truncate(rng: random.Random, thread: dict) -> None:
    """Cut the last assistant reply mid-sentence, or inside its ```json block."""
    msg = _last_assistant(thread)
    text = msg["content"]
    if "```json" in text and rng.random() < 0.5:
        start = text.index("```json") + len("```json\n")
        msg["content"] = text[:start + rng.randint(5, 40)]
        return
    words = text.split(" ")
    cut = " ".join(words[: rng.randint(max(2, len(words) * 2 // 5), max(3, len(words) * 4 // 5))])
    msg["content"] = re.sub(r"[^A-Za-z0-9]+$", "", cut)


def empty(rng: random.Random, thread: dict) -> None:
    """Empty the last assistant reply."""
    _last_assistant(thread)["content"] = rng.choice(("", " ", "\n"))


def instant_refund(rng: random.Random, thread: dict) -> None:
    """Replace the refund timing sentence with a promise of an instant refund."""
    msg, eta, promise = _last_assistant(thread), thread["facts"]["eta_days"], rng.choice(INSTANT)
    timing = [t.format(eta=eta) for t in TIMING if t.format(eta=eta) in msg["content"]]
    assert timing, "instant_refund needs a reply with a refund timing sentence"
    msg["content"] = msg["content"].replace(timing[0], promise)


def drop_fraud_warning(rng: random.Random, thread: dict) -> None:
    """Remove the mandatory fraud warning from every assistant turn."""
    for m in thread["messages"]:
        if m["role"] == "assistant":
            m["content"] = m["content"].replace(" " + FRAUD_WARNING, "").replace(FRAUD_WARNING, "").strip()


def wrong_amount(rng: random.Random, thread: dict) -> None:
    """Change the refund amount (JSON and prose), e.g. the order total instead of the missing items' price."""
    facts, msg = thread["facts"], _last_assistant(thread)
    old = facts["refund_amount"]
    if facts["refund_type"] == "partial" and facts["order_total"] != old:
        new = facts["order_total"]
    else:
        new = round(old * rng.choice((0.5, 1.1, 1.25)), 2)
    cur = facts["currency"]
    msg["content"] = (msg["content"].replace(money(old, cur), money(new, cur))
                      .replace(f'"amount": {json.dumps(old)}', f'"amount": {json.dumps(new)}'))


def invalid_json(rng: random.Random, thread: dict) -> None:
    """Break the refund JSON: single quotes, trailing comma, missing brace, string amount or an extra field."""
    msg = _last_assistant(thread)
    start = msg["content"].index("```json\n") + len("```json\n")
    end = msg["content"].index("\n```", start)
    line = msg["content"][start:end]
    broken = rng.choice((
        line.replace('"', "'"), line[:-1] + ", }", line[:-1],
        re.sub(r'"amount": ([0-9.]+)', r'"amount": "\1"', line),
        line[:-1] + ', "approved_by": "agent"}'))
    msg["content"] = msg["content"][:start] + broken + msg["content"][end:]


def toxic_assistant(rng: random.Random, thread: dict) -> None:
    """Insert a mild insult after the opener of the last assistant reply."""
    msg = _last_assistant(thread)
    head, tail = re.split(r"(?<=[.!?])\s+", msg["content"], maxsplit=1)
    msg["content"] = f"{head} {rng.choice(TOXIC_ASSISTANT)} {tail}"


def toxic_user(rng: random.Random, thread: dict) -> None:
    """Prefix the first user turn with a mild insult."""
    msg = thread["messages"][_user_idx(thread)]
    msg["content"] = f"{rng.choice(TOXIC_USER)} {msg['content']}"


def boilerplate(rng: random.Random, thread: dict) -> None:
    """Prepend three paragraphs of boilerplate to the first assistant reply."""
    msg = next(m for m in thread["messages"] if m["role"] == "assistant")
    msg["content"] = "\n\n".join(rng.choice(BOILERPLATE)) + "\n\n" + msg["content"]


def typo(rng: random.Random, text: str) -> str:
    """Swap two inner letters of one longer word, as customers do (numbers and IDs are left alone)."""
    words = [i for i, w in enumerate(text.split(" ")) if w.isalpha() and len(w) >= 5
             and w not in ("standard", "express") and w not in FIRST_NAMES]
    if not words:
        return text
    parts = text.split(" ")
    i = rng.choice(words)
    w, j = parts[i], rng.randint(1, len(parts[i]) - 3)
    parts[i] = w[:j] + w[j + 1] + w[j] + w[j + 2:]
    return " ".join(parts)
