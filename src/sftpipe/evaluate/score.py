"""Checks on generated replies (schema, policy, correctness), their rates with Wilson CIs, human ratings, and the
combined score.

Combined score = sum(w_c * s_c) / sum(w_c) over the components c that were measured, each s_c in [0, 1] with
higher better: schema_validity, policy (share of replies with no violation), correctness (share of replies with
every expected field right), win_rate / length_controlled_win_rate (judge vs the baseline), ifeval (prompt-level
strict accuracy), general_retention (min(1, exp(baseline NLL - NLL)) on the general set: 1 = no forgetting), and
human_tone / human_policy / human_correctness (mean rating mapped from eval.human_scale to [0, 1]).
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path
from typing import Protocol

import yaml

from ..errors import ConfigError
from .checks import Rule, field_correctness, load_rules, schema_valid
from .items import EvalItem
from .stats import wilson_interval

HUMAN_FIELDS = ("tone", "policy", "correctness")


class Policy(Protocol):
    """Names the rules that apply to a reply of an item, and those it breaks."""

    def check(self, text: str, item: EvalItem) -> tuple[list[str], list[str]]: ...


class RulesPolicy:
    """Generic rules file (see checks.py): per category, must / must not contain."""

    def __init__(self, rules: list[Rule]):
        self.rules = rules

    def check(self, text: str, item: EvalItem) -> tuple[list[str], list[str]]:
        applicable = [r for r in self.rules if r.applies_to(item.category)]
        return [r.id for r in applicable], [r.id for r in applicable if r.violated_by(text)]


class HarborPolicy:
    """The Harbor demo policy (`sftpipe.demo.check_reply`, which needs each item's facts). Applicable rules: the
    global ones, the item's category's own, and the fact checks listed in rules.yaml; none for an item whose
    category the policy does not know (e.g. general instructions mixed into a held-out split)."""

    def check(self, text: str, item: EvalItem) -> tuple[list[str], list[str]]:
        from ..demo.policy import check_reply, must_ask, rules

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


def load_policy(path: str | None, kind: str = "auto") -> Policy | None:
    """The policy checker: a generic rules file (`rules:` list, see checks.py), or the Harbor rules shipped in
    sftpipe.demo (`harbor`, or `auto` on a Harbor-format file). None when there is no rules file and no harbor."""
    if kind == "harbor" and path is None:
        return HarborPolicy()
    if path is None:
        if kind == "rules":
            raise ConfigError("eval", ["policy: rules, but eval.rules names no file; fix: set eval.rules to a "
                                       "rules YAML (see sftpipe.evaluate.checks)"])
        return None
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    if kind == "auto":
        kind = "harbor" if isinstance(data, dict) and "categories" in data and "global" in data else "rules"
    if kind == "rules":
        return RulesPolicy(load_rules(path))
    from ..demo.policy import asset_bytes

    if Path(path).read_bytes() != asset_bytes("rules.yaml"):
        raise ConfigError(str(path), ["policy harbor checks replies with the Harbor rules shipped in sftpipe.demo, "
                                      "and this file differs from them; fix: write your rules in the generic "
                                      "format (see sftpipe.evaluate.checks) and set eval.policy: rules"])
    return HarborPolicy()


def check_reply(text: str, item: EvalItem, policy: Policy | None) -> dict:
    """All checks on one reply: schema validity, policy rules (applicable, violated) and expected fields."""
    row: dict = {"schema_valid": None, "schema_error": None, "applicable": [], "violations": [], "correct": None}
    if item.schema is not None:
        row["schema_valid"], row["schema_error"] = schema_valid(text, item.schema)
    if policy is not None:
        row["applicable"], row["violations"] = policy.check(text, item)
    if item.expected:
        row["correct"] = field_correctness(text, item.expected)
    return row


def _rate(k: int, n: int) -> dict:
    lo, hi = wilson_interval(k, n)
    return {"n": n, "k": k, "rate": round(k / n, 4) if n else None, "ci95": [round(lo, 4), round(hi, 4)]}


def summarize_checks(rows: list[dict], categories: list[str]) -> dict:
    """Rates over one set's replies: schema validity, violation rate (overall, per rule, per category),
    correctness (all fields, per field); each with a Wilson 95% interval. `k` counts the event named."""
    schema = [r["schema_valid"] for r in rows if r["schema_valid"] is not None]
    checked = [r for r in rows if r["applicable"]]
    per_rule: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    per_cat: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for r, cat in zip(rows, categories):
        if not r["applicable"]:
            continue
        per_cat[cat][0] += bool(r["violations"])
        per_cat[cat][1] += 1
        for rid in dict.fromkeys([*r["applicable"], *r["violations"]]):
            per_rule[rid][1] += 1
        for rid in r["violations"]:
            per_rule[rid][0] += 1
    n_checked = len(checked)
    correct = [r["correct"] for r in rows if r["correct"] is not None]
    fields: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for c in correct:
        for f, ok in c.items():
            fields[f][0] += ok
            fields[f][1] += 1
    return {
        "schema_validity": _rate(sum(schema), len(schema)),
        "policy": {"violation_rate": _rate(sum(bool(r["violations"]) for r in checked), n_checked),
                   "per_rule": {k: _rate(*v) for k, v in sorted(per_rule.items())},
                   "per_category": {k: _rate(*v) for k, v in sorted(per_cat.items())}},
        "correctness": {"all_fields": _rate(sum(all(c.values()) for c in correct), len(correct)),
                        "per_field": {k: _rate(*v) for k, v in sorted(fields.items())}},
    }


def pooled_components(set_summaries: list[dict]) -> dict[str, float]:
    """schema_validity, policy and correctness pooled over sets (components with no data are left out)."""
    acc = {"schema_validity": [0, 0], "policy": [0, 0], "correctness": [0, 0]}
    for s in set_summaries:
        v = s["schema_validity"]
        acc["schema_validity"][0] += v["k"]
        acc["schema_validity"][1] += v["n"]
        p = s["policy"]["violation_rate"]
        acc["policy"][0] += p["n"] - p["k"]
        acc["policy"][1] += p["n"]
        c = s["correctness"]["all_fields"]
        acc["correctness"][0] += c["k"]
        acc["correctness"][1] += c["n"]
    return {k: round(a / n, 4) for k, (a, n) in acc.items() if n}


def load_human(path: str | Path, scale: tuple[float, float] = (1.0, 5.0)) -> dict[str, dict]:
    """Human ratings (CSV or JSONL rows of prompt_id, checkpoint, tone, policy, correctness) -> per checkpoint
    {"n", "human_tone", "human_policy", "human_correctness"}, means mapped from `scale` to [0, 1]."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    else:
        rows = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    lo, hi = scale
    sums: dict[str, dict[str, list[float]]] = defaultdict(lambda: {f: [] for f in HUMAN_FIELDS})
    problems = []
    for n, row in enumerate(rows, start=1):
        missing = [k for k in ("prompt_id", "checkpoint", *HUMAN_FIELDS) if k not in row]
        if missing:
            problems.append(f"row {n}: missing column(s) {missing}")
            continue
        for f in HUMAN_FIELDS:
            if row[f] in ("", None):
                continue  # a rater may skip a dimension
            try:
                value = float(row[f])
            except (TypeError, ValueError):
                problems.append(f"row {n}, {f}: {row[f]!r} is not a number")
                continue
            if not lo <= value <= hi:
                problems.append(f"row {n}, {f}: {value} is outside the rating scale {lo}..{hi}")
                continue
            sums[str(row["checkpoint"])][f].append((value - lo) / (hi - lo))
    if problems:
        raise ConfigError(str(path), problems + ["fix: one row per (prompt_id, checkpoint) with numeric tone, "
                                                 "policy and correctness ratings (eval.human_scale)"])
    return {ck: {"n": max(len(v) for v in d.values()),
                 **{f"human_{f}": round(sum(v) / len(v), 4) for f, v in d.items() if v}}
            for ck, d in sums.items()}


def combined_score(components: dict[str, float], weights: dict[str, float]) -> dict:
    """Weighted mean of the measured components that have a weight > 0; reports what was used.

    >>> combined_score({"policy": 0.5, "win_rate": 1.0}, {"policy": 3, "win_rate": 1, "ifeval": 2})["score"]
    0.625
    """
    used = {k: v for k, v in components.items() if weights.get(k, 0) > 0 and v is not None}
    total = sum(weights[k] for k in used)
    score = sum(weights[k] * v for k, v in used.items()) / total if total else None
    return {"score": round(score, 4) if score is not None else None, "components": used,
            "weights": {k: weights[k] for k in used},
            "unmeasured": sorted(k for k, w in weights.items() if w > 0 and k not in used)}
