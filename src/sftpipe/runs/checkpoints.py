"""Completion markers: a folder counts as written only once its marker lists every file with size and sha256.

Checkpoints are written file by file (by the Trainer); only after every process has finished does the main process
write `sftpipe_checkpoint.json` (atomically). A folder without a marker, or whose files no longer match it (killed
mid-write, or mid-deletion by rotation, or a file changed since), is never taken as complete.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from ..io import sha256_file, write_json

MARKER = "sftpipe_checkpoint.json"
_CHECKPOINT = re.compile(r"checkpoint-(\d+)")


def _files(folder: Path, skip: tuple[str, ...] = ()) -> dict[str, dict]:
    return {str(p.relative_to(folder)): {"size": p.stat().st_size, "sha256": sha256_file(p)}
            for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != MARKER and not p.name.startswith(".")
            and not any(str(p.relative_to(folder)).startswith(s) for s in skip)}


def write_marker(folder: Path, step: int | None = None, *, marker: str = MARKER, skip: tuple[str, ...] = (),
                 **fields) -> None:
    """Mark `folder` complete: its step (checkpoints), extra `fields`, and every file with size and sha256."""
    write_json(Path(folder) / marker, {"step": step, **fields, "files": _files(Path(folder), skip)})


def read_marker(folder: Path, marker: str = MARKER) -> dict | None:
    """The marker's contents, or None when it is missing or unreadable."""
    try:
        data = json.loads((Path(folder) / marker).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("files"), dict) else None


def is_complete(folder: Path, *, marker: str = MARKER, verify: bool = False) -> bool:
    """True when `folder` has a marker and every file it lists is present with the recorded size (and, with
    `verify`, the recorded sha256). Markers from before sha256 was recorded (sizes only) are checked by size."""
    data = read_marker(folder, marker)
    if not data or not data["files"]:
        return False
    for name, entry in data["files"].items():
        path = Path(folder) / name
        size = entry["size"] if isinstance(entry, dict) else entry
        if not path.is_file() or path.stat().st_size != size:
            return False
        if verify and isinstance(entry, dict) and entry.get("sha256") and sha256_file(path) != entry["sha256"]:
            return False
    return True


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
