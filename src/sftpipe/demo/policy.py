"""The Harbor Support policy as code: `check_reply` returns the rules a reply breaks, given the ticket's facts.

The rules and phrases come from assets/rules.yaml, the refund JSON Schema from assets/refund_offer.schema.json;
policy.md is the same policy in prose. A reply's refund JSON is found by the one rule of `sftpipe.checks` (the one
curate and eval use). The generator uses this to prove its gold replies are clean and its policy noise is caught;
the eval stage uses it on model outputs through the `harbor` plug-in (`PLUGINS`, for
`sftpipe.evaluate.score.load_policy`).
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from jsonschema import Draft202012Validator

from ..checks import find_json, schema_validator
from ..errors import ConfigError

if TYPE_CHECKING:
    from ..evaluate.items import EvalItem

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
    return schema_validator(refund_schema())


LIMITS: dict[str, Any] = rules()["limits"]
FRAUD_WARNING: str = rules()["phrases"]["fraud_warning"]
ESCALATION: str = rules()["phrases"]["escalation"]
FRAUD_WARNING_CATEGORIES = tuple(c for c, r in rules()["categories"].items() if r["fraud_warning"])
_PLACEHOLDER = re.compile(r"\{([A-Za-z_]\w*)\}")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def split_refund_json(reply: str) -> tuple[list[str], str]:
    """Split a reply into its JSON candidates' text (`sftpipe.checks.find_json`) and the prose around them.

    >>> split_refund_json('Done.\\n\\n```json\\n{"a": 1}\\n```\\n\\nBye.')
    (['{"a": 1}\\n'], 'Done.\\n\\n\\n\\nBye.')
    """
    found = find_json(reply)
    prose, pos = [], 0
    for f in found:
        prose.append(reply[pos:f.start])
        pos = f.end
    return [f.body for f in found], "".join(prose) + reply[pos:]


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
    if not due and blocks:
        out.append("refund_json_unexpected")
    elif due and not blocks:
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


class HarborPolicy:
    """The Harbor policy as an eval checker (the `Policy` protocol of sftpipe.evaluate.score): `check(text, item)`
    -> (applicable rules, broken rules), from `check_reply` with the item's facts. Applicable: the global rules,
    the item's category's own, and the fact checks listed in rules.yaml; none for an item whose category the policy
    does not know (e.g. general instructions mixed into a held-out split)."""

    def check(self, text: str, item: EvalItem) -> tuple[list[str], list[str]]:
        r = rules()
        if item.category not in r["categories"]:
            return [], []
        if not isinstance(item.facts, dict):
            raise ConfigError("eval", [f"set {item.set!r}, record {item.id}: policy harbor needs the ticket facts, "
                                       "found none; fix: set the set's facts_key"])
        cat = r["categories"][item.category]
        applicable = [*r["global"]["must_not_contain"], *cat.get("must_not_contain", {}),
                      *cat.get("must_contain", {}), *r["fact_checks"]]
        # a multi-turn prompt may already quote the order ID the ticket's first turn lacked
        ask = must_ask(item.facts, item.category, [m.content for m in item.messages if m.role == "user"])
        return list(dict.fromkeys(applicable)), check_reply(text, item.facts, item.category, ask=ask)


def harbor_policy(path: str | None) -> HarborPolicy:
    """The `harbor` plug-in for `load_policy`: the shipped rules, which need no file; a file given must equal them."""
    if path is not None and Path(path).read_bytes() != asset_bytes("rules.yaml"):
        raise ConfigError(str(path), ["policy harbor checks replies with the Harbor rules shipped in sftpipe.demo, "
                                      "and this file differs from them; fix: write your rules in the generic "
                                      "format (see sftpipe.checks) and set eval.policy: rules"])
    return HarborPolicy()


PLUGINS = {"harbor": harbor_policy}  # policy kind -> factory, for sftpipe.evaluate.score.load_policy(plugins=...)
