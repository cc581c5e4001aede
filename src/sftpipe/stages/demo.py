"""`sftpipe demo`: the Harbor Support example end to end (generate -> curate -> train -> eval -> dpo -> eval) in
one folder.

The output folder is a project: it holds `sftpipe.yaml` (the shipped Harbor config) and every stage runs in
it, so any stage can be re-run by hand there (`cd OUT && sftpipe train -c sftpipe.yaml`).
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ..demo.generate import SIZES, generate
from ..demo.summary import (BARS, DPO_BARS, DPO_KEYS, PROFILES, dpo_verdicts, headline, load_demo_config,
                             side_by_side, verdicts)
from ..io import atomic_write_text
from . import curate as curate_stage
from . import dpo as dpo_stage
from . import doctor as doctor_stage
from . import eval as eval_stage
from . import show
from . import train as train_stage


@dataclass
class DemoResult:
    """Where the demo wrote everything, and the headline numbers it measured."""

    out_dir: Path
    config: Path
    run_dir: Path
    report: Path
    summary: dict[str, Any]
    seconds: dict[str, float]
    dpo: dict[str, Any] | None = None  # base / SFT / DPO side by side, the DPO bars and the DPO run folder


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


def dpo_table(table: dict[str, dict[str, Any]]) -> Table:
    """Base, SFT and DPO side by side, with the DPO bars (against SFT) and whether this run met them."""
    out = Table(title="Harbor demo: base vs SFT vs DPO (held-out prompts)", title_justify="left")
    for col in ("metric", "base", "SFT", "DPO", "DPO - SFT", "target", "met"):
        out.add_column(col, justify="left" if col in ("metric", "target") else "right")
    met = dpo_verdicts(table)
    fmt = (lambda v: "-" if v is None else f"{v:.3f}")
    for key in DPO_KEYS:
        s, d = table["sft"].get(key), table["dpo"].get(key)
        out.add_row(key, fmt(table["base"].get(key)), fmt(s), fmt(d), "-" if s is None or d is None else
                    f"{d - s:+.3f}", DPO_BARS.get(key, ("-",))[0], {True: "yes", False: "NO", None: "-"}[met.get(key)])
    return out


def run_dpo(cfg, sft_eval: Path, console: Console, seconds: dict[str, float]) -> dict[str, Any]:
    """The preference pass from the SFT run (dpo section), its eval against the base, and the three-way table
    (opener and reply lengths counted in the model's tokens)."""
    from ..models import load_tokenizer

    t = time.perf_counter()
    console.rule("5/6 dpo (from the SFT run)")
    trained = dpo_stage.run(cfg)
    show.print_dpo(trained)
    seconds["dpo"] = time.perf_counter() - t
    t = time.perf_counter()
    console.rule("6/6 eval (base vs DPO)")
    evaluated = eval_stage.run(cfg, trained.run_dir, log=console.log)
    seconds["eval_dpo"] = time.perf_counter() - t
    tok = load_tokenizer(cfg.model.name)
    table = side_by_side(sft_eval, evaluated.out_dir,
                         count=lambda text: len(tok.encode(text, add_special_tokens=False)) if text else 0)
    return {"run_dir": str(trained.run_dir), "table": table, "met": dpo_verdicts(table),
            "targets": {k: v[0] for k, v in DPO_BARS.items()}, "pairs": trained.pairs,
            "final_loss": trained.final_loss, "reward_margin": trained.metrics.get("rewards/margins")}


def run(out_dir: Path, *, size: str = "default", seed: int = 0, sets: list[str] | None = None,
        console: Console | None = None) -> DemoResult:
    """Generate the Harbor export into `out_dir`, then curate, train (LoRA) and evaluate base vs SFT there."""
    console = console or Console()
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    cfg = load_demo_config(out_dir, size, sets)
    with contextlib.chdir(out_dir):
        t = time.perf_counter()
        console.rule(f"1/6 generate ({SIZES[PROFILES[size]['generate']]} raw threads)")
        generate(Path("data"), size=PROFILES[size]["generate"], seed=seed)
        seconds["generate"] = time.perf_counter() - t
        t = time.perf_counter()
        console.rule("2/6 curate")
        show.print_curate(curate_stage.run(cfg), console)
        seconds["curate"] = time.perf_counter() - t
        t = time.perf_counter()
        console.rule("3/6 train (LoRA)")
        trained = train_stage.run(cfg)
        seconds["train"] = time.perf_counter() - t
        t = time.perf_counter()
        console.rule("4/6 eval (base vs SFT)")
        evaluated = eval_stage.run(cfg, trained.run_dir, log=console.log)
        seconds["eval"] = time.perf_counter() - t
        dpo = run_dpo(cfg, evaluated.out_dir, console, seconds)
    summary = headline(evaluated.metrics)
    atomic_write_text(out_dir / "summary.json", json.dumps(
        {**summary, "met": verdicts(summary), "targets": {k: v[0] for k, v in BARS.items()}, "dpo": dpo,
         "seconds": {k: round(v, 1) for k, v in seconds.items()}}, indent=2) + "\n")
    console.print(summary_table(summary))
    console.print(dpo_table(dpo["table"]))
    console.print("stage seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()))
    console.print(f"report: {out_dir / evaluated.report_path}")
    with contextlib.chdir(out_dir):  # the guide's production checklist on what the demo just built
        show.print_doctor(doctor_stage.run(cfg, config_path=Path("sftpipe.yaml"), run_dir=trained.run_dir), console)
    return DemoResult(out_dir, out_dir / "sftpipe.yaml", out_dir / trained.run_dir, out_dir / evaluated.report_path,
                      summary, seconds, dpo)
