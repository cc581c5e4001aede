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
from collections.abc import Callable, Mapping

import yaml

from ..checks import Rule, field_correctness, load_rules, schema_valid
from ..errors import ConfigError
from .items import EvalItem
from ..stats import wilson_interval

HUMAN_FIELDS = ("tone", "policy", "correctness")


class Policy(Protocol):
    """Names the rules that apply to a reply of an item, and those it breaks."""

    def check(self, text: str, item: EvalItem) -> tuple[list[str], list[str]]: ...


class RulesPolicy:
    """Generic rules file (see sftpipe.checks): per category, must / must not contain."""

    def __init__(self, rules: list[Rule]):
        self.rules = rules

    def check(self, text: str, item: EvalItem) -> tuple[list[str], list[str]]:
        applicable = [r for r in self.rules if r.applies_to(item.category)]
        return [r.id for r in applicable], [r.id for r in applicable if r.violated_by(text)]


PolicyFactory = Callable[[str | None], Policy]  # a plug-in policy kind: the rules file (or None) -> its checker


def load_policy(path: str | None, kind: str = "auto",
                plugins: Mapping[str, PolicyFactory] | None = None) -> Policy | None:
    """The policy checker for a rules file: `rules`, the generic format (a top-level `rules:` list, see
    sftpipe.checks), or a kind that `plugins` maps to a factory (e.g. sftpipe.demo.policy.PLUGINS: harbor).
    `auto`: `rules` for a generic file, else the one plug-in given. None when there is no file and no plug-in kind."""
    plugins = dict(plugins or {})
    allowed = ", ".join(["auto", "rules", *plugins])
    if kind not in ("auto", "rules", *plugins):
        raise ConfigError("eval", [f"policy: {kind!r} is not a known policy kind (allowed here: {allowed}); fix: "
                                   "set eval.policy to one of them, or pass the plug-in that provides it"])
    if path is None:
        if kind == "rules":
            raise ConfigError("eval", ["policy: rules, but eval.rules names no file; fix: set eval.rules to a "
                                       "rules YAML (see sftpipe.checks)"])
        return None if kind == "auto" else plugins[kind](None)
    if kind == "auto":
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        if isinstance(data, dict) and isinstance(data.get("rules"), list):
            kind = "rules"
        elif len(plugins) == 1:
            kind = next(iter(plugins))
        else:
            raise ConfigError(str(path), [f"policy: auto finds no top-level 'rules:' list in this file and "
                                          f"{len(plugins)} plug-in kinds, not one (allowed kinds: {allowed}); fix: "
                                          "write the generic rules format (see sftpipe.checks), or set eval.policy "
                                          "to the file's kind and pass the plug-in that reads it"])
    return RulesPolicy(load_rules(path)) if kind == "rules" else plugins[kind](path)


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


def validity(flags: list[bool]) -> dict:
    """The share of True among `flags` (e.g. schema-valid replies) with its Wilson 95% interval.

    >>> validity([True, True, False])["k"], validity([])["rate"]
    (2, None)
    """
    return _rate(sum(flags), len(flags))


def pooled_rate(rates: list[dict]) -> dict:
    """Rates (`validity` / `_rate` dicts) of several sets pooled into one: their k and n summed."""
    return _rate(sum(r["k"] for r in rates), sum(r["n"] for r in rates))


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
