"""What a server needs of a run: the model (adapter folded in), its tokenizer and renderer, the stop ids from its
generation config, and the proof that the template it will serve is the one training used (all but the stop ids
through `sftpipe.runs`, which owns how a run is served)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..generate import stop_token_ids
from ..render import ChatRenderer
from ..runs import RunInfo, load_for_serving, resolve


@dataclass
class Served:
    """A loaded run, ready to serve."""

    name: str
    model: Any
    tokenizer: Any
    renderer: ChatRenderer
    info: RunInfo
    stop_ids: list[int]
    template_sha256: str
    run_dir: Path
    checkpoint: str | None


def load_served(ref: str | Path) -> Served:
    """A run folder (runs/<name>) or one of its checkpoint folders, checked and loaded for serving."""
    run = resolve(ref)
    loaded = load_for_serving(run)
    stops = stop_token_ids(loaded.renderer, run.run_dir / "generation_config.json")
    name = loaded.info.name or run.run_dir.name
    return Served(name if run.checkpoint is None else f"{name}/{run.checkpoint}", loaded.model, loaded.tokenizer,
                  loaded.renderer, loaded.info, stops, loaded.template_sha256, run.run_dir, run.checkpoint)
