"""Completion markers: a folder counts as written only once its marker lists every file with size and sha256.

Checkpoints are written file by file (by the Trainer); only after every process has finished does the main process
write `sftpipe_checkpoint.json` (atomically). A folder without a marker, or whose files no longer match it (killed
mid-write, or mid-deletion by rotation, or a file changed since), is never taken as complete.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from ..commit import manifest_ok, write_manifest

MARKER = "sftpipe_checkpoint.json"
_CHECKPOINT = re.compile(r"checkpoint-(\d+)")


def write_marker(folder: Path, step: int | None = None, **fields) -> None:
    """Mark a checkpoint folder complete: its step and every file with size and sha256."""
    write_manifest(folder, MARKER, step=step, **fields)


def is_complete(folder: Path, *, verify: bool = False) -> bool:
    """True when `folder` has a marker and every file it lists is present with the recorded size (and, with
    `verify`, the recorded sha256)."""
    return manifest_ok(folder, MARKER, verify=verify)


def _step(folder: Path) -> int | None:
    m = _CHECKPOINT.fullmatch(folder.name)
    return int(m.group(1)) if m else None


def checkpoint_folders(folder: Path) -> list[Path]:
    """`checkpoint-<step>` folders under `folder`, by step (complete or not)."""
    found = [p for p in Path(folder).glob("checkpoint-*") if p.is_dir() and _step(p) is not None]
    return sorted(found, key=_step)


def complete_checkpoints(folder: Path) -> list[Path]:
    """The complete `checkpoint-<step>` folders under `folder`, by step."""
    return [p for p in checkpoint_folders(folder) if is_complete(p)]


def latest_checkpoint(folder: Path, *, verify: bool = False) -> Path | None:
    """The complete checkpoint with the highest step (sha256-verified with `verify`), or None."""
    for p in reversed(checkpoint_folders(folder)):
        if is_complete(p, verify=verify):
            return p
    return None


def remove_partial(folder: Path) -> list[str]:
    """Delete incomplete checkpoint folders (a crash left them); returns their names."""
    removed = []
    for p in checkpoint_folders(folder):
        if not is_complete(p):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p.name)
    return removed
