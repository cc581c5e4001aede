"""`sftpipe curate`: raw exports (`curate.inputs`) -> `curate.out_dir` with splits, rejects and a report.

The stages and their order are in sftpipe.curate.pipeline; this module resolves the config and prints a summary.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from ..config import SftpipeConfig
from ..curate.pipeline import CurateResult, run_curate
from ..errors import ConfigError


def run(cfg: SftpipeConfig) -> CurateResult:
    """Curate the `curate.inputs` files into `curate.out_dir` (token counts: see `curate.tokenizer`)."""
    c = cfg.curate
    if not c.inputs:
        raise ConfigError("config", ["curate.inputs: no input files; fix: set curate.inputs or pass --input FILE"])
    missing = [p for p in c.inputs if not Path(p).is_file()]
    if missing:
        raise ConfigError("curate.inputs", [f"{p}: file not found" for p in missing])
    tokenizer = (cfg.model.tokenizer or cfg.model.name) if c.tokenizer == "model" else None  # loaded by filters
    return run_curate([Path(p) for p in c.inputs], c, Path(c.out_dir), format=c.format,
                      column_map=c.column_map or None, tokenizer=tokenizer)


def summary_tables(result: CurateResult) -> list[Table]:
    """Rich tables: records in/out and drops per stage and reason, then each output with its content hash."""
    stages = Table(title=f"curate: {result.counts['in']} in, {result.counts['kept']} kept, "
                         f"{result.counts['rejected']} rejected", title_justify="left")
    for col, justify in (("stage", "left"), ("in", "right"), ("out", "right"), ("dropped (reason: count)", "left"),
                         ("seconds", "right")):
        stages.add_column(col, justify=justify)
    for s in result.report["stages"]:
        reasons = ", ".join(f"{r}: {n}" for r, n in sorted(s["dropped"].items())) or "-"
        stages.add_row(s["stage"], str(s["in"]), str(s["out"]), reasons, f"{s['seconds']:.2f}")
    files = Table(title=f"outputs in {result.out_dir}", title_justify="left")
    files.add_column("file")
    files.add_column("records", justify="right")
    files.add_column("sha256 (content hash)", overflow="fold")
    for name, digest in result.hashes.items():
        split = name.removesuffix(".jsonl")
        n = result.counts.get(split, result.counts["rejected"] if split == "rejected" else "")
        files.add_row(name, str(n), digest)
    files.add_row("report.json", "", "(counts per stage and reason, timings, hash definition)")
    return [stages, files]


def print_summary(result: CurateResult, console: Console | None = None) -> None:
    """Print `summary_tables`."""
    console = console or Console()
    for table in summary_tables(result):
        console.print(table)
