"""`sftpipe curate`: raw exports (`curate.inputs`) -> `curate.out_dir` with splits, rejects and a report.

The stages and their order are in sftpipe.curate.pipeline; this module resolves the config
(`show.print_curate` prints the result).
"""

from __future__ import annotations

from pathlib import Path

from ..config import SftpipeConfig
from ..curate.pipeline import CurateResult, run_curate
from ..errors import ConfigError
from . import show


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
                      column_map=c.column_map or None, tokenizer=tokenizer,
                      progress=show.tracker() if c.progress else None)
