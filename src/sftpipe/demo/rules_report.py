"""Harbor eval results per rule class: shape rules (fixed by the category) and decision rules (thresholds).

Every rule name `policy.check_reply` can produce is either a *shape* rule, whose right answer the ticket's category
(and whether the order ID is known yet) fixes, or a *decision* rule, whose right answer turns on a threshold in the
facts. `rule_class` classifies a (category, rule) pair:

- escalation_missing / escalation_unwarranted: decision for shipping_delay (escalate iff more than 5 days late) and
  for refund, partial_refund, damaged_item, cancellation (escalate iff a refund is due and its amount is over 200;
  whether one is due is itself the window or shipped decision); shape for chargeback and fraud_suspicion (always
  escalate) and order_status, address_change, account_lockout (never).
- refund_json_missing / refund_json_unexpected: decision for refund (due iff delivered <= 30 days ago) and
  cancellation (due iff not shipped); shape for partial_refund and damaged_item (always due) and the rest (never).
- refund_eta_wrong: decision wherever a refund can be due (eta_days is 10 iff the refund is escalated); this also
  counts a wrong non-escalated eta (5 for 3) as a decision error, the price of classifying per (category, rule).
- everything else is shape: empty, incomplete, length, opener, order ID quoted / asked / not another one, fraud
  warning, recovery page, no account action in chat, instant refund, boilerplate, insult, eta stated (a lookup of
  the shipping type, no threshold), and the refund block's validity, type, currency, order ID and amount (copied or
  summed from the ticket: no threshold decides them).
- while the reply must ask for the order ID (`policy.must_ask`) no decision is due: every rule is shape then.

The address change decision (editable iff not shipped) has no rule name in rules.yaml: `check_reply` does not check
it, so it appears only in the decision table, read from the reply's wording (`address_editable`).

Decisions are read from the reply (escalated: the escalation sentence; refund offered: a ```json block, as
`policy.split_refund_json` finds it; eta: the block's eta_days) and scored against the facts on the items where the
rule applies; an undecided reply counts as wrong. Each decision is reported with its majority-class baseline: the
accuracy of always answering the more frequent outcome on the same items.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..evaluate.items import dotted
from ..stats import wilson_interval
from .policy import ESCALATION, LIMITS, must_ask, rules, split_refund_json

REFUND_CATEGORIES = ("refund", "partial_refund", "damaged_item", "cancellation")
# rule name -> the categories where it is a decision rule (shape elsewhere)
DECISION_RULES: dict[str, tuple[str, ...]] = {
    "escalation_missing": ("shipping_delay", *REFUND_CATEGORIES),
    "escalation_unwarranted": ("shipping_delay", *REFUND_CATEGORIES),
    "refund_json_missing": ("refund", "cancellation"),
    "refund_json_unexpected": ("refund", "cancellation"),
    "refund_eta_wrong": REFUND_CATEGORIES,
}
SHAPE_RULES = frozenset({
    "empty", "incomplete", "too_long", "opener_too_long", "order_id_missing", "order_id_not_requested",
    "wrong_order_id", "fraud_warning_missing", "refund_json_invalid", "refund_amount_wrong", "refund_type_wrong",
    "refund_fields_wrong", "instant_refund", "boilerplate", "insult", "eta_stated", "recovery_page",
    "account_action_in_chat"})


def rule_class(category: str, rule: str, ask: bool = False) -> str:
    """'shape' or 'decision' for one rule broken by a reply in `category` (`ask`: the reply must ask for the ID).

    >>> rule_class("refund", "refund_json_missing"), rule_class("damaged_item", "refund_json_missing")
    ('decision', 'shape')
    >>> rule_class("chargeback", "escalation_missing"), rule_class("refund", "escalation_missing", ask=True)
    ('shape', 'shape')
    """
    if rule in DECISION_RULES:
        return "decision" if not ask and category in DECISION_RULES[rule] else "shape"
    if rule in SHAPE_RULES:
        return "shape"
    raise KeyError(f"rule {rule!r} is neither a shape nor a decision rule; fix: classify it in "
                   "sftpipe.demo.rules_report (SHAPE_RULES or DECISION_RULES)")


def escalated(reply: str, facts: dict) -> bool:
    return ESCALATION in reply


def refund_offered(reply: str, facts: dict) -> bool:
    return bool(split_refund_json(reply)[0])


_NO_EDIT = re.compile(r"(?i)\b(?:can[’']?t|cannot|can not|unable to|no longer|won[’']?t be able to)\b"
                      r"[^.!?\n]{0,40}\b(?:change|update|edit)")
_EDIT = re.compile(r"(?i)\bedit address\b|\byou can (?:still )?(?:change|update|edit)\b")


def address_editable(reply: str, facts: dict | None = None) -> bool | None:
    """Whether the reply lets the customer change the address (None: it says neither).

    >>> address_editable("Order HB-1 hasn't shipped yet, so you can change the address under Orders > Edit address.")
    True
    >>> address_editable("Order HB-1 has already shipped, so we can't change the address anymore.")
    False
    >>> address_editable("Happy to help.") is None
    True
    """
    return False if _NO_EDIT.search(reply) else True if _EDIT.search(reply) else None


def escalated_eta(reply: str, facts: dict) -> bool | None:
    """True if the one refund block's eta_days is the escalated one, False if it is the type's own, else None.

    >>> f = {"refund_type": "partial"}
    >>> [escalated_eta(f'```json\\n{{"eta_days": {d}}}\\n```', f) for d in (10, 3, 7)]
    [True, False, None]
    """
    blocks = split_refund_json(reply)[0]
    try:
        offer = json.loads(blocks[0]) if len(blocks) == 1 else None
    except json.JSONDecodeError:
        return None
    eta = offer.get("eta_days") if isinstance(offer, dict) else None
    eta_days = LIMITS["eta_days"]
    return True if eta == eta_days["escalated_refund"] else False if eta == eta_days.get(facts["refund_type"]) else None


@dataclass(frozen=True)
class Decision:
    """One threshold rule: where it applies, the right outcome from the facts, the outcome read from a reply."""

    name: str
    categories: tuple[str, ...]
    truth: Callable[[dict], bool]
    read: Callable[[str, dict], bool | None]
    applies: Callable[[dict], bool] = lambda facts: True


DECISIONS = (
    Decision(f"escalation (refund > {LIMITS['escalate_amount_over']})", REFUND_CATEGORIES,
             lambda f: bool(f["escalate"]), escalated),
    Decision(f"escalation (days late > {LIMITS['escalate_days_late_over']})", ("shipping_delay",),
             lambda f: bool(f["escalate"]), escalated),
    Decision(f"refund window (<= {LIMITS['refund_window_days']} days)", ("refund",),
             lambda f: bool(f["refund_due"]), refund_offered),
    Decision("cancellation (not shipped)", ("cancellation",), lambda f: bool(f["refund_due"]), refund_offered),
    Decision("address change (not shipped)", ("address_change",), lambda f: not f["shipped"], address_editable),
    Decision(f"refund eta ({LIMITS['eta_days']['escalated_refund']} iff escalated)", REFUND_CATEGORIES,
             lambda f: bool(f["escalate"]), escalated_eta, applies=lambda f: bool(f["refund_due"])),
)


def rate(k: int, n: int) -> dict[str, Any]:
    """k of n with its Wilson 95% interval, the way metrics.json writes rates.

    >>> rate(0, 0)
    {'n': 0, 'k': 0, 'rate': None, 'ci95': [0.0, 1.0]}
    """
    lo, hi = wilson_interval(k, n)
    return {"n": n, "k": k, "rate": k / n if n else None, "ci95": [round(lo, 4), round(hi, 4)]}


def majority_baseline(truths: list[bool]) -> float | None:
    """Accuracy of always answering the more frequent outcome.

    >>> majority_baseline([True, True, True, False]), majority_baseline([])
    (0.75, None)
    """
    return max(sum(truths), len(truths) - sum(truths)) / len(truths) if truths else None


def model_report(rows: list[dict], facts: dict[str, dict]) -> dict[str, Any]:
    """Shape-rule violation rate (pooled and per category) and decision accuracy vs majority for one model's
    generations rows (checked rows of a Harbor category; `facts`: item id -> ticket facts)."""
    cats = rules()["categories"]
    shape: dict[str, list[int]] = {}
    scored: dict[str, list[tuple[bool, bool | None]]] = {d.name: [] for d in DECISIONS}
    unmatched = 0
    for row in rows:
        cat = row.get("category")
        if cat not in cats or not row.get("applicable"):
            continue
        f = facts.get(str(row.get("id")))
        if f is None:
            unmatched += 1
            continue
        ask = must_ask(f, cat, [m["content"] for m in row.get("prompt") or [] if m.get("role") == "user"])
        broken = any(rule_class(cat, r, ask) == "shape" for r in row.get("violations") or [])
        for key in ("(all)", cat):
            shape.setdefault(key, []).append(int(broken))
        reply = (row.get("output") or "").strip()
        for d in DECISIONS:
            if cat in d.categories and not ask and d.applies(f):
                scored[d.name].append((d.truth(f), d.read(reply, f)))
    decisions = {}
    for name, pairs in scored.items():
        truths, k = [t for t, _ in pairs], sum(t == p for t, p in pairs)
        base = majority_baseline(truths)
        decisions[name] = {**rate(k, len(pairs)), "undecided": sum(p is None for _, p in pairs),
                           "positives": sum(truths), "majority": base,
                           "above_majority": None if base is None else k / len(pairs) > base}
    pooled = shape.pop("(all)", [])
    return {"shape": {"pooled": rate(sum(pooled), len(pooled)),
                      "per_category": {c: rate(sum(v), len(v)) for c, v in sorted(shape.items())}},
            "decisions": decisions, "unmatched": unmatched}


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def eval_facts(metrics: dict[str, Any], root: Path) -> dict[str, dict[str, dict]]:
    """set -> item id -> facts, from the eval sets metrics.json names (paths relative to `root`, the project)."""
    keys = {s["name"]: s.get("facts_key") or "facts" for s in (metrics.get("config") or {}).get("sets", [])}
    out: dict[str, dict[str, dict]] = {}
    for name, info in (metrics.get("sets") or {}).items():
        path = Path(root) / info["path"]
        if not path.is_file():
            raise FileNotFoundError(f"{path}: eval set {name!r} named in metrics.json is missing; the per-rule-class "
                                    "report needs its facts")
        out[name] = {str(r["id"]): f for r in _jsonl(path)
                     if "id" in r and isinstance(f := dotted(r, keys.get(name, "facts")), dict)}
    return out


def eval_rules(eval_dir: Path, root: Path) -> dict[str, dict[str, Any]]:
    """label (baseline, final, ...) -> `model_report` over every eval set of one eval folder (IFEval has no checks)."""
    eval_dir = Path(eval_dir)
    facts = eval_facts(json.loads((eval_dir / "metrics.json").read_text(encoding="utf-8")), root)
    out = {}
    for folder in sorted(p for p in (eval_dir / "generations").iterdir() if p.is_dir()):
        rows = [{**r, "id": f"{path.stem}\0{r.get('id')}"} for path in sorted(folder.glob("*.jsonl"))
                if path.stem != "ifeval" for r in _jsonl(path)]
        out[folder.name] = model_report(rows, {f"{s}\0{i}": f for s, by_id in facts.items() for i, f in by_id.items()})
    return out
