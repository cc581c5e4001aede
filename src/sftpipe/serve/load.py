"""What a server needs of a run: the model (adapter folded in), its tokenizer and renderer, the stop ids from its
generation config, and the proof that the template it will serve is the one training used (all but the stop ids
through `sftpipe.runs`, which owns how a run is served)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..generate import stop_token_ids
from ..render import ChatRenderer
from ..runs import RunInfo, load_for_serving, load_front, resolve


@dataclass
class Served:
    """A loaded run, ready to serve."""

    name: str
    model: Any  # None in a front (the engine behind it holds the weights)
    tokenizer: Any
    renderer: ChatRenderer
    info: RunInfo
    stop_ids: list[int]
    template_sha256: str
    run_dir: Path
    checkpoint: str | None
    config: Any  # the model's transformers config (context length, vocabulary size)


def load_served(ref: str | Path, *, weights: bool = True) -> Served:
    """A run folder (runs/<name>) or one of its checkpoint folders, checked and loaded for serving (without
    `weights`: for a front, which hands token ids to an engine)."""
    run = resolve(ref)
    loaded = load_for_serving(run) if weights else load_front(run)
    stops = stop_token_ids(loaded.renderer, run.run_dir / "generation_config.json")
    name = loaded.info.name or run.run_dir.name
    return Served(name if run.checkpoint is None else f"{name}/{run.checkpoint}", loaded.model, loaded.tokenizer,
                  loaded.renderer, loaded.info, stops, loaded.template_sha256, run.run_dir, run.checkpoint,
                  loaded.config)
