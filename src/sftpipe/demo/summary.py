"""The Harbor demo's config profiles, and the headline numbers and bars it reports (read from eval metrics).
The stage that runs the demo end to end is `sftpipe.stages.demo`."""

from __future__ import annotations

import contextlib
import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

from ..config import SftpipeConfig, load_config
from ..io import atomic_write_text

# demo size -> generator size and the training/eval budget that keeps the whole run within minutes on a CPU
PROFILES: dict[str, dict[str, Any]] = {
    "tiny": {"generate": "tiny", "set": ["train.max_steps=4", "train.eval_steps=2", "eval.generation.max_new_tokens=8",
                                        "eval.regression.ifeval_subset=3", "eval.regression.ifeval_max_new_tokens=8",
                                        "eval.regression.general_limit=5"]},
    "small": {"generate": "small", "set": []},
    "default": {"generate": "default", "set": []},
}


def harbor_config_text() -> str:
    """The shipped Harbor config (also in the repository as configs/harbor.yaml)."""
    return resources.files(__package__).joinpath("assets/harbor.yaml").read_text(encoding="utf-8")


def load_demo_config(out_dir: Path, size: str, sets: list[str] | None = None) -> SftpipeConfig:
    """Write the Harbor config into `out_dir` and load it with the size profile and user overrides."""
    if size not in PROFILES:
        raise ValueError(f"size={size!r}; allowed: {', '.join(PROFILES)}")
    path = out_dir / "sftpipe.yaml"
    atomic_write_text(path, harbor_config_text())
    with contextlib.chdir(out_dir):
        return load_config(path.name, [*PROFILES[size]["set"], *(sets or [])])


def _pooled(sets: dict[str, Any], *path: str) -> float | None:
    """k/n of one check pooled over every eval set (None where nothing was measured)."""
    k = n = 0
    for metrics in sets.values():
        node: Any = metrics
        for key in path:
            node = node.get(key, {}) if isinstance(node, dict) else {}
        k, n = k + (node.get("k") or 0), n + (node.get("n") or 0)
    return k / n if n else None


def _rule_rate(sets: dict[str, Any], rule: str) -> float | None:
    """Share of checked replies that break `rule`, pooled over the eval sets."""
    k = n = 0
    for metrics in sets.values():
        policy = metrics.get("checks", {}).get("policy", {})
        n += policy.get("violation_rate", {}).get("n") or 0
        k += (policy.get("per_rule", {}).get(rule) or {}).get("k") or 0
    return k / n if n else None


SHAPE_KEY = "shape-rule violation rate"
DECISION_PREFIX = "decision: "


def rule_rows(report: dict[str, Any] | None) -> dict[str, float | None]:
    """The headline rows of one model's per-rule-class report (`rules_report.model_report`): the shape-rule
    violation rate and one "decision: <rule>" accuracy per threshold rule (nothing without a report)."""
    if not report:
        return {}
    return {SHAPE_KEY: report["shape"]["pooled"]["rate"],
            **{DECISION_PREFIX + name: d["rate"] for name, d in report["decisions"].items()}}


def majority(report: dict[str, Any] | None) -> dict[str, float | None]:
    """"decision: <rule>" -> its majority-class baseline on the items of one model's report."""
    return {DECISION_PREFIX + name: d["majority"] for name, d in ((report or {}).get("decisions") or {}).items()}


def headline(metrics: dict[str, Any], rules: dict[str, Any] | None = None) -> dict[str, Any]:
    """The numbers the demo exists to show, for the base model and the SFT run, read from the eval metrics, plus
    the per-rule-class rows when `rules` holds `rules_report.eval_rules` of the same eval folder ("majority": the
    decision rules' baselines on the SFT model's items)."""
    out: dict[str, Any] = {}
    for role, label in (("base", "baseline"), ("sft", "final")):
        m = metrics.get("models", {}).get(label, {})
        sets = m.get("sets", {})
        out[role] = {
            "refund JSON schema-valid": _pooled(sets, "checks", "schema_validity"),
            "refund fields correct": _pooled(sets, "checks", "correctness", "all_fields"),
            "policy violation rate": _pooled(sets, "checks", "policy", "violation_rate"),
            "boilerplate opener rate": _rule_rate(sets, "boilerplate"),
            "held-out loss": sets.get("heldout", {}).get("loss", {}).get("overall", {}).get("loss"),
            "IFEval prompt-level strict": m.get("regression", {}).get("ifeval", {}).get("prompt_level_strict"),
            **rule_rows((rules or {}).get(label)),
        }
    if rules:
        out["majority"] = majority(rules.get("final"))
    return out


# what the demo must show (the issue's bars): metric -> (target as text, test on (base, sft)); the decision rules'
# bars ("> majority <baseline>") depend on the eval items and come from `bars`
BARS: dict[str, tuple[str, Any]] = {
    "refund JSON schema-valid": (">= 0.90", lambda b, s: s >= 0.90),
    "policy violation rate": ("<= base / 5", lambda b, s: s * 5 <= b),
    SHAPE_KEY: ("<= base / 5", lambda b, s: s * 5 <= b),
    "boilerplate opener rate": ("0", lambda b, s: s == 0),
    "held-out loss": ("< base", lambda b, s: s < b),
}
REPORTED = {"refund fields correct": "delta reported", "IFEval prompt-level strict": "delta reported"}


def decision_bars(baselines: dict[str, float | None]) -> dict[str, tuple[str, Any]]:
    """One bar per decision rule: accuracy above its majority-class baseline (test on (reference, model)).

    >>> text, test = decision_bars({"decision: x": 0.75})["decision: x"]
    >>> text, test(None, 0.75), test(None, 0.8)
    ('> majority 0.750', False, True)
    """
    return {k: (f"> majority {'-' if m is None else f'{m:.3f}'}", lambda _, x, m=m: m is not None and x > m)
            for k, m in baselines.items()}


def bars(summary: dict[str, Any]) -> dict[str, tuple[str, Any]]:
    """BARS plus the decision rules' bars for this summary's baselines."""
    return {**BARS, **decision_bars(summary.get("majority") or {})}


def targets(summary: dict[str, Any]) -> dict[str, str]:
    """metric -> its target as text ("delta reported" for a metric shown without a bar)."""
    return {**{k: v for k, v in REPORTED.items() if k in summary.get("sft", {})},
            **{k: v[0] for k, v in bars(summary).items()}}


def verdicts(summary: dict[str, Any]) -> dict[str, bool | None]:
    """Whether each bar (BARS and the decision bars) is met (None where a number is missing).

    >>> summary = {"base": {"policy violation rate": 0.9}, "sft": {"policy violation rate": 0.2}}
    >>> verdicts(summary)["policy violation rate"]
    False
    """
    out: dict[str, bool | None] = {}
    for key, (_, test) in bars(summary).items():
        b, s = summary.get("base", {}).get(key), summary.get("sft", {}).get(key)
        out[key] = None if b is None or s is None else bool(test(b, s))
    return out


# -- the DPO stage: base, SFT and DPO side by side ------------------------------------------------------------------
# A sentence is filler (part of the opener) when it thanks, apologises, hedges or promises help without saying
# anything specific; the first sentence with a number, an order ID or none of these phrases is substantive.
FILLER = re.compile(r"(?i)\b(thank(s| you)|appreciat|we (truly )?value|valued|satisfaction|apologi[sz]e|sorry|"
                    r"understand|happy to|glad to|delighted|pleased to|let me|sure\b|of course|great question|"
                    r"not (completely |entirely )?sure|i think|my (very )?best|hope|please know|we strive|reviewed|"
                    r"our dedicated|priority|reaching out|contacting|hmm)")
_SENTENCES = re.compile(r"(?<=[.!?])\s+|\n+")


def opener(reply: str) -> str:
    """The text before the reply's first substantive sentence.

    >>> opener("Thank you for contacting us! We value you.\\n\\nOrder HB-1 ships in 2 days. Thanks!")
    'Thank you for contacting us! We value you.'
    >>> opener("Order HB-1 ships in 2 days.")
    ''
    """
    head = []
    for sentence in (s for s in _SENTENCES.split(reply.strip()) if s.strip()):
        if re.search(r"\d", sentence) or not FILLER.search(sentence):
            break
        head.append(sentence.strip())
    return " ".join(head)


def reply_lengths(generations: Path, count: Any = None) -> dict[str, float | None]:
    """Mean reply length (generated tokens) and mean opener length (`count`, default words) over one model's
    generations folder (eval/generations/<label>/, IFEval excluded)."""
    count = count or (lambda text: len(text.split()))
    tokens, openers = [], []
    for path in sorted(Path(generations).glob("*.jsonl")):
        if path.name == "ifeval.jsonl":
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            tokens.append(row.get("new_tokens") or 0)
            openers.append(count(opener(row.get("output") or "")))
    mean = (lambda xs: sum(xs) / len(xs) if xs else None)
    return {"mean reply tokens": mean(tokens), "mean opener tokens": mean(openers)}


DPO_KEYS = ("mean reply tokens", "mean opener tokens", "boilerplate opener rate", "policy violation rate",
            SHAPE_KEY, "refund JSON schema-valid", "IFEval prompt-level strict")
# what the DPO stage must show against SFT: metric -> (target as text, test on (sft, dpo)); the decision rules keep
# their bar against the majority baseline (`decision_bars`)
DPO_BARS: dict[str, tuple[str, Any]] = {
    "mean opener tokens": ("< SFT", lambda s, d: d < s),
    "mean reply tokens": ("< SFT", lambda s, d: d < s),
    "policy violation rate": ("<= SFT", lambda s, d: d <= s),
    SHAPE_KEY: ("<= SFT", lambda s, d: d <= s),
    "refund JSON schema-valid": (">= SFT", lambda s, d: d >= s),
}


def side_by_side(sft_eval: Path, dpo_eval: Path, count: Any = None,
                 rules: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """Base, SFT and DPO headline numbers from the SFT run's eval (base vs SFT) and the DPO run's (base vs DPO);
    `rules`: role (base, sft, dpo) -> its `rules_report.model_report`, for the shape and decision rows."""
    sft_m = json.loads((Path(sft_eval) / "metrics.json").read_text(encoding="utf-8"))
    dpo_m = json.loads((Path(dpo_eval) / "metrics.json").read_text(encoding="utf-8"))
    first, second = headline(sft_m), headline(dpo_m)
    rows = {"base": (first["base"], Path(sft_eval) / "generations" / "baseline"),
            "sft": (first["sft"], Path(sft_eval) / "generations" / "final"),
            "dpo": (second["sft"], Path(dpo_eval) / "generations" / "final")}
    out = {}
    for role, (numbers, folder) in rows.items():
        extra = rule_rows((rules or {}).get(role))
        merged = {**numbers, **reply_lengths(folder, count), **extra}
        out[role] = {k: merged.get(k) for k in [*DPO_KEYS, "held-out loss", *(k for k in extra if k not in DPO_KEYS)]}
    return out


def dpo_bars(baselines: dict[str, float | None] | None = None) -> dict[str, tuple[str, Any]]:
    """DPO_BARS plus the decision rules' bars for these baselines."""
    return {**DPO_BARS, **decision_bars(baselines or {})}


def dpo_verdicts(table: dict[str, dict[str, Any]],
                 baselines: dict[str, float | None] | None = None) -> dict[str, bool | None]:
    """Whether the DPO run meets each bar in DPO_BARS against the SFT run, and each decision bar against its majority
    baseline (`baselines`: "decision: <rule>" -> baseline); None where a number is missing.

    >>> dpo_verdicts({"sft": {"mean opener tokens": 9.0}, "dpo": {"mean opener tokens": 4.0}})["mean opener tokens"]
    True
    """
    out: dict[str, bool | None] = {}
    for key, (_, test) in dpo_bars(baselines).items():
        s, d = table.get("sft", {}).get(key), table.get("dpo", {}).get(key)
        out[key] = None if s is None or d is None else bool(test(s, d))
    return out
