"""The Harbor Support policy as code: `check_reply` returns the rules a reply breaks, given the ticket's facts.

The rules and phrases come from assets/rules.yaml, the refund JSON Schema from assets/refund_offer.schema.json;
policy.md is the same policy in prose. The generator uses this to prove its gold replies are clean and its
policy noise is caught; the eval stage can reuse it on model outputs.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml
from jsonschema import Draft202012Validator

ASSET_NAMES = ("policy.md", "refund_offer.schema.json", "rules.yaml", "curate_rules.yaml")


def asset_bytes(name: str) -> bytes:
    """The bytes of one shipped policy asset (one of ASSET_NAMES)."""
    if name not in ASSET_NAMES:
        raise ValueError(f"unknown demo asset {name!r}; allowed: {', '.join(ASSET_NAMES)}")
    return resources.files("sftpipe.demo").joinpath("assets").joinpath(name).read_bytes()


@lru_cache(maxsize=1)
def rules() -> dict[str, Any]:
    """The parsed rules.yaml (cached)."""
    return yaml.safe_load(asset_bytes("rules.yaml"))


@lru_cache(maxsize=1)
def refund_schema() -> dict[str, Any]:
    """The refund offer JSON Schema (draft 2020-12)."""
    return json.loads(asset_bytes("refund_offer.schema.json"))


@lru_cache(maxsize=1)
def _validator() -> Draft202012Validator:
    Draft202012Validator.check_schema(refund_schema())
    return Draft202012Validator(refund_schema())


LIMITS: dict[str, Any] = rules()["limits"]
FRAUD_WARNING: str = rules()["phrases"]["fraud_warning"]
ESCALATION: str = rules()["phrases"]["escalation"]
FRAUD_WARNING_CATEGORIES = tuple(c for c, r in rules()["categories"].items() if r["fraud_warning"])
_PLACEHOLDER = re.compile(r"\{([A-Za-z_]\w*)\}")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def split_refund_json(reply: str) -> tuple[list[str], str]:
    """Split a reply into its ```json block bodies and the prose around them.

    >>> split_refund_json('Done.\\n\\n```json\\n{"a": 1}\\n```\\n\\nBye.')
    (['{"a": 1}\\n'], 'Done.\\n\\n\\n\\nBye.')
    """
    pattern = re.compile(rules()["refund_json_pattern"], re.DOTALL)
    return pattern.findall(reply), pattern.sub("", reply)


def refund_errors(block: str, facts: dict) -> list[str]:
    """Rule names broken by one refund JSON block: parse/schema errors, then field mismatches with the facts."""
    try:
        offer = json.loads(block)
    except json.JSONDecodeError:
        return ["refund_json_invalid"]
    out = [] if _validator().is_valid(offer) else ["refund_json_invalid"]
    if not isinstance(offer, dict):
        return out
    amount = offer.get("amount")
    if not isinstance(amount, (int, float)) or isinstance(amount, bool) \
            or abs(amount - (facts["refund_amount"] or 0)) > 0.005:
        out.append("refund_amount_wrong")
    if offer.get("type") != facts["refund_type"]:
        out.append("refund_type_wrong")
    if offer.get("eta_days") != facts["eta_days"]:
        out.append("refund_eta_wrong")
    if offer.get("order_id") != facts["order_id"] or offer.get("currency") != facts["currency"]:
        out.append("refund_fields_wrong")
    return out


def _fill(pattern: str, facts: dict) -> str:
    def sub(m: re.Match) -> str:
        if facts.get(m.group(1)) is None:
            raise ValueError(f"rules.yaml pattern {pattern!r} needs fact {m.group(1)!r}, which these facts lack; "
                             f"fix: add it to the facts (keys present: {', '.join(sorted(facts))})")
        return re.escape(str(facts[m.group(1)]))
    return _PLACEHOLDER.sub(sub, pattern)


def check_reply(reply: str, facts: dict, category: str, *, ask: bool | None = None) -> list[str]:
    """Names of the policy rules `reply` breaks for a ticket with `facts` (empty list: compliant).

    `ask`: the customer has not given the order ID yet, so the reply must ask for it (default: from
    `facts["order_id_given"]`). While asking, no refund offer, escalation or category must_contain rule applies.

    >>> f = {"order_id": None, "order_id_given": True, "refund_due": False, "escalate": False}
    >>> check_reply("Sorry. Your refund is instant!", f, "account_lockout")
    ['instant_refund', 'fraud_warning_missing', 'recovery_page']
    """
    r = rules()
    if category not in r["categories"]:
        raise ValueError(f"unknown category {category!r}; allowed: {', '.join(r['categories'])}; "
                         "fix: use a category from rules.yaml")
    cat = r["categories"][category]
    ask = bool(cat["order_id"] and not facts.get("order_id_given", True)) if ask is None else ask
    text = reply.strip()
    if not text:
        return ["empty"]
    blocks, prose = split_refund_json(text)
    out: list[str] = []
    if text.count("```") % 2 or not re.search(r"(?:[.!?)]|```)$", text):
        out.append("incomplete")
    must_not = {**r["global"]["must_not_contain"], **cat.get("must_not_contain", {})}
    out += [name for name, pat in must_not.items() if re.search(_fill(pat, facts), text)]
    words = prose.split()
    if len(words) > LIMITS["max_words"]:
        out.append("too_long")
    if len(_SENTENCE_END.split(prose.strip(), maxsplit=1)[0].split()) > LIMITS["max_opener_words"]:
        out.append("opener_too_long")

    ids = re.findall(r["order_id_pattern"], text)
    if ask:
        if ids:
            out.append("wrong_order_id")
        if not re.search(r["ask_order_id_pattern"], prose):
            out.append("order_id_not_requested")
    elif cat["order_id"]:
        if any(i != facts["order_id"] for i in ids):
            out.append("wrong_order_id")
        if facts["order_id"] not in text:
            out.append("order_id_missing")
    elif ids:
        out.append("wrong_order_id")
    if cat["fraud_warning"] and FRAUD_WARNING not in text:
        out.append("fraud_warning_missing")

    escalate = bool(facts["escalate"]) and not ask
    if escalate and ESCALATION not in text:
        out.append("escalation_missing")
    if not escalate and ESCALATION in text:
        out.append("escalation_unwarranted")

    due = bool(facts["refund_due"]) and not ask
    has_block = "```json" in text
    if not due and has_block:
        out.append("refund_json_unexpected")
    elif due and not has_block:
        out.append("refund_json_missing")
    elif due:
        out += ["refund_json_invalid"] if len(blocks) != 1 else refund_errors(blocks[0], facts)
    if not ask:
        out += [name for name, pat in cat.get("must_contain", {}).items() if not re.search(_fill(pat, facts), text)]
    return list(dict.fromkeys(out))


def must_ask(facts: dict, category: str, user_turns: list[str]) -> bool:
    """True if the next reply must ask for the order ID: the category needs one and no user turn so far quotes it.

    >>> must_ask({"order_id": "HB-123456"}, "refund", ["I want my money back", "HB-123456"])
    False
    """
    return bool(rules()["categories"][category]["order_id"] and facts.get("order_id")
                and not any(facts["order_id"] in turn for turn in user_turns))


def check_thread(record: dict) -> list[str]:
    """Rules broken by any assistant turn of an export record; a turn asks for the order ID iff no earlier user
    turn contains it."""
    facts, category = record["facts"], record["category"]
    out: list[str] = []
    users: list[str] = []
    for m in record["messages"]:
        if m["role"] == "user":
            users.append(m["content"])
        elif m["role"] == "assistant":
            out += check_reply(m["content"], facts, category, ask=must_ask(facts, category, users))
    return list(dict.fromkeys(out))
