"""`sftpipe demo`: the Harbor Support example end to end (generate -> curate -> train -> eval) in one folder.

The output folder is a project: it holds `sftpipe.yaml` (the shipped Harbor config) and every stage runs in
it, so any stage can be re-run by hand there (`cd OUT && sftpipe train -c sftpipe.yaml`).
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ..config import SftpipeConfig, load_config
from ..io import atomic_write_text
from .generate import SIZES, generate

# demo size -> generator size and the training/eval budget that keeps the whole run within minutes on a CPU
PROFILES: dict[str, dict[str, Any]] = {
    "tiny": {"generate": "tiny", "set": ["train.max_steps=4", "train.eval_steps=2", "eval.generation.max_new_tokens=8",
                                        "eval.regression.ifeval_subset=3", "eval.regression.ifeval_max_new_tokens=8",
                                        "eval.regression.general_limit=5"]},
    "small": {"generate": "small", "set": []},
    "default": {"generate": "default", "set": []},
}


@dataclass
class DemoResult:
    """Where the demo wrote everything, and the headline numbers it measured."""

    out_dir: Path
    config: Path
    run_dir: Path
    report: Path
    summary: dict[str, Any]
    seconds: dict[str, float]


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


def headline(metrics: dict[str, Any]) -> dict[str, Any]:
    """The numbers the demo exists to show, for the base model and the SFT run, read from the eval metrics."""
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
        }
    return out


# what the demo must show (the bars): metric -> (target as text, test on (base, sft))
BARS: dict[str, tuple[str, Any]] = {
    "refund JSON schema-valid": (">= 0.90", lambda b, s: s >= 0.90),
    "policy violation rate": ("<= base / 5", lambda b, s: s * 5 <= b),
    "boilerplate opener rate": ("0", lambda b, s: s == 0),
    "held-out loss": ("< base", lambda b, s: s < b),
}


def verdicts(summary: dict[str, Any]) -> dict[str, bool | None]:
    """Whether each bar in BARS is met (None where a number is missing).

    >>> verdicts({"base": {"policy violation rate": 0.9}, "sft": {"policy violation rate": 0.2}})["policy violation rate"]
    False
    """
    out: dict[str, bool | None] = {}
    for key, (_, test) in BARS.items():
        b, s = summary.get("base", {}).get(key), summary.get("sft", {}).get(key)
        out[key] = None if b is None or s is None else bool(test(b, s))
    return out


def summary_table(summary: dict[str, Any]) -> Table:
    """Base vs SFT, one row per headline metric, with its target and whether this run met it."""
    table = Table(title="Harbor demo: base vs SFT (held-out prompts)", title_justify="left")
    for col in ("metric", "base", "SFT", "change", "target", "met"):
        table.add_column(col, justify="left" if col in ("metric", "target") else "right")
    met = verdicts(summary)
    fmt = (lambda v: "-" if v is None else f"{v:.3f}")
    for key in summary.get("sft", {}):
        b, r = summary["base"].get(key), summary["sft"].get(key)
        change = "-" if b is None or r is None else f"{r - b:+.3f}"
        verdict = {True: "yes", False: "NO", None: "-"}[met.get(key)]
        table.add_row(key, fmt(b), fmt(r), change, BARS.get(key, ("delta reported",))[0], verdict)
    return table


def run(out_dir: Path, *, size: str = "default", seed: int = 0, sets: list[str] | None = None,
        console: Console | None = None) -> DemoResult:
    """Generate the Harbor export into `out_dir`, then curate, train (LoRA) and evaluate base vs SFT there."""
    from ..evaluate.stage import run as run_eval
    from ..stages.curate import print_summary, run as run_curate
    from ..train.sft import run as run_train

    console = console or Console()
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    cfg = load_demo_config(out_dir, size, sets)
    with contextlib.chdir(out_dir):
        t = time.perf_counter()
        console.rule(f"1/4 generate ({SIZES[PROFILES[size]['generate']]} raw threads)")
        generate(Path("data"), size=PROFILES[size]["generate"], seed=seed)
        seconds["generate"] = time.perf_counter() - t
        t = time.perf_counter()
        console.rule("2/4 curate")
        print_summary(run_curate(cfg), console)
        seconds["curate"] = time.perf_counter() - t
        t = time.perf_counter()
        console.rule("3/4 train (LoRA)")
        trained = run_train(cfg)
        seconds["train"] = time.perf_counter() - t
        t = time.perf_counter()
        console.rule("4/4 eval (base vs SFT)")
        evaluated = run_eval(cfg, trained.run_dir, log=console.log)
        seconds["eval"] = time.perf_counter() - t
    summary = headline(evaluated.metrics)
    atomic_write_text(out_dir / "summary.json", json.dumps(
        {**summary, "met": verdicts(summary), "targets": {k: v[0] for k, v in BARS.items()},
         "seconds": {k: round(v, 1) for k, v in seconds.items()}}, indent=2) + "\n")
    console.print(summary_table(summary))
    console.print(f"stage seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()))
    console.print(f"report: {out_dir / evaluated.report_path}")
    return DemoResult(out_dir, out_dir / "sftpipe.yaml", out_dir / trained.run_dir, out_dir / evaluated.report_path,
                      summary, seconds)
