"""Trainer callbacks: a rich progress line, and completion markers that make checkpoints safe to resume from.

The Trainer writes `checkpoint-<step>/` in place, file by file. Only after every process has finished writing
does `CheckpointMarker` write `sftpipe_checkpoint.json` (atomically) listing each file and its size. A folder
without a marker, or whose files no longer match it (killed mid-write, or mid-deletion by rotation), is never
taken as the latest checkpoint.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)
from transformers import TrainerCallback

from ..io import write_json

MARKER = "sftpipe_checkpoint.json"


def _files(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != MARKER and not p.name.startswith(".")}


def write_marker(folder: Path, step: int) -> None:
    """Mark `folder` complete: its step and every file with its size."""
    write_json(folder / MARKER, {"step": step, "files": _files(folder)})


def is_complete(folder: Path) -> bool:
    """True when `folder` has a marker and every file it lists is present with the recorded size."""
    try:
        marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
        files = marker["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return bool(files) and all((folder / name).is_file() and (folder / name).stat().st_size == size
                               for name, size in files.items())


def _step(folder: Path) -> int | None:
    tail = folder.name.removeprefix("checkpoint-")
    return int(tail) if folder.name.startswith("checkpoint-") and tail.isdigit() else None


def checkpoint_folders(folder: Path) -> list[Path]:
    """`checkpoint-<step>` folders under `folder`, by step (complete or not)."""
    found = [p for p in Path(folder).glob("checkpoint-*") if p.is_dir() and _step(p) is not None]
    return sorted(found, key=_step)


def latest_checkpoint(folder: Path) -> Path | None:
    """The complete checkpoint with the highest step, or None."""
    complete = [p for p in checkpoint_folders(folder) if is_complete(p)]
    return complete[-1] if complete else None


def remove_partial(folder: Path) -> list[str]:
    """Delete incomplete checkpoint folders (a crash left them); returns their names."""
    removed = []
    for p in checkpoint_folders(folder):
        if not is_complete(p):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p.name)
    return removed


class CheckpointMarker(TrainerCallback):
    """After each save, wait for all processes, then mark the checkpoint complete (main process)."""

    def on_save(self, args, state, control, **kwargs):
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.barrier()
        if state.is_world_process_zero:
            write_marker(Path(args.output_dir) / f"checkpoint-{state.global_step}", state.global_step)
        return control


def _fmt(logs: dict[str, Any]) -> str:
    parts = []
    if "loss" in logs:
        parts.append(f"loss {logs['loss']:.4f}")
    if "learning_rate" in logs:
        parts.append(f"lr {logs['learning_rate']:.2e}")
    if "tokens_per_second" in logs:
        parts.append(f"{logs['tokens_per_second']:.0f} tok/s")
    return "  ".join(parts)


class RichProgress(TrainerCallback):
    """A rich progress bar on the main process: step, loss, lr, tokens/s, elapsed and ETA; eval results as lines."""

    def __init__(self, console: Console | None = None):
        self.console = console or Console(stderr=True)
        self.progress: Progress | None = None
        self.task = None

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        self.progress = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("eta"),
                                 TimeRemainingColumn(), console=self.console, transient=False)
        self.progress.start()
        self.task = self.progress.add_task("train", total=state.max_steps, completed=state.global_step, info="")

    def on_step_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.progress is None or not logs:
            return
        if "eval_loss" in logs:
            self.progress.console.print(f"step {state.global_step}: eval_loss {logs['eval_loss']:.4f} "
                                        f"({logs.get('eval_trained_tokens', 0)} trained tokens)")
        elif "loss" in logs:
            self.progress.update(self.task, info=_fmt(logs))

    def on_train_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step)
            self.progress.stop()
            self.progress = None
