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

from ..demo.generate import SIZES, generate
from ..demo.report import write_demo_report
from ..demo.rules_report import eval_rules
from ..demo.summary import (PROFILES, dpo_bars, dpo_verdicts, headline, load_demo_config, majority, side_by_side,
                            targets, verdicts)
from ..io import atomic_write_text
from ..runs import read_info
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
    report: Path  # the SFT eval's report.html
    demo_report: Path  # report.html: base, SFT and DPO side by side
    summary: dict[str, Any]
    seconds: dict[str, float]
    dpo: dict[str, Any]  # base / SFT / DPO side by side, the DPO bars and the DPO run folder
    doctor: doctor_stage.DoctorResult  # the guide's production checklist on what the demo built


def run_dpo(cfg, sft_eval: Path, seconds: dict[str, float],
            sft_rules: dict[str, Any] | None = None, root: Path | None = None) -> dict[str, Any]:
    """The preference pass from the SFT run (dpo section), its eval against the base, and the three-way table
    (opener and reply lengths counted in the model's tokens; shape and decision rows from `sft_rules`, the SFT
    eval's `eval_rules`, and the DPO eval's, with set paths relative to `root`, default the current folder)."""
    from ..models import load_tokenizer

    t = time.perf_counter()
    show.step("5/6 dpo (from the SFT run)")
    trained = dpo_stage.run(cfg)
    show.print_dpo(trained)
    seconds["dpo"] = time.perf_counter() - t
    t = time.perf_counter()
    show.step("6/6 eval (base vs DPO)")
    evaluated = eval_stage.run(cfg, trained.run_dir, log=show.log("eval"), progress=show.tracker())
    seconds["eval_dpo"] = time.perf_counter() - t
    tok = load_tokenizer(cfg.model.name)
    root = Path(root or ".")
    sft_rules = sft_rules if sft_rules is not None else eval_rules(root / sft_eval, root)
    dpo_rules = eval_rules(root / evaluated.out_dir, root)
    rules = {"base": sft_rules.get("baseline"), "sft": sft_rules.get("final"), "dpo": dpo_rules.get("final")}
    table = side_by_side(sft_eval, evaluated.out_dir, rules=rules,
                         count=lambda text: len(tok.encode(text, add_special_tokens=False)) if text else 0)
    baselines = majority(rules["dpo"])
    return {"run_dir": str(trained.run_dir), "table": table, "met": dpo_verdicts(table, baselines),
            "targets": {k: v[0] for k, v in dpo_bars(baselines).items()}, "majority": baselines,
            "rules": rules, "pairs": trained.pairs,
            "final_loss": trained.final_loss, "reward_margin": trained.metrics.get("rewards/margins")}


def run(out_dir: Path, *, size: str = "default", seed: int = 0, sets: list[str] | None = None) -> DemoResult:
    """Generate the Harbor export into `out_dir`, then curate, train, evaluate base vs SFT, run DPO from the SFT run
    and evaluate it there; write summary.json and report.html (base, SFT and DPO side by side) and run doctor."""
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    cfg = load_demo_config(out_dir, size, sets)
    with contextlib.chdir(out_dir):
        t = time.perf_counter()
        show.step(f"1/6 generate ({SIZES[PROFILES[size]['generate']]} raw threads)")
        generate(Path("data"), size=PROFILES[size]["generate"], seed=seed)
        seconds["generate"] = time.perf_counter() - t
        t = time.perf_counter()
        show.step("2/6 curate")
        show.print_curate(curate_stage.run(cfg))
        seconds["curate"] = time.perf_counter() - t
        t = time.perf_counter()
        show.step(f"3/6 train ({cfg.train.mode})")
        trained = train_stage.run(cfg)
        seconds["train"] = time.perf_counter() - t
        t = time.perf_counter()
        show.step("4/6 eval (base vs SFT)")
        evaluated = eval_stage.run(cfg, trained.run_dir, log=show.log("eval"), progress=show.tracker())
        seconds["eval"] = time.perf_counter() - t
        sft_rules = eval_rules(out_dir / evaluated.out_dir, out_dir)
        dpo = run_dpo(cfg, evaluated.out_dir, seconds, sft_rules, out_dir)
    summary = headline(evaluated.metrics, sft_rules)
    rules = dpo.pop("rules")  # per model: shape-rule rate per category, each decision rule's n, accuracy, baseline
    atomic_write_text(out_dir / "summary.json", json.dumps(
        {**summary, "met": verdicts(summary), "targets": targets(summary), "run_dir": str(trained.run_dir),
         "dpo": dpo, "rules": rules, "examples_seen": read_info(out_dir / trained.run_dir).examples_seen,
         "seconds": {k: round(v, 1) for k, v in seconds.items()}}, indent=2) + "\n")
    demo_report = write_demo_report(out_dir)
    with contextlib.chdir(out_dir):  # the guide's production checklist on what the demo just built
        doctor = doctor_stage.run(cfg, config_path=Path("sftpipe.yaml"), run_dir=trained.run_dir)
    return DemoResult(out_dir, out_dir / "sftpipe.yaml", out_dir / trained.run_dir, out_dir / evaluated.report_path,
                      demo_report, summary, seconds, dpo, doctor)
