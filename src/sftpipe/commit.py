"""Outputs committed as a whole: a folder is written beside its target and swapped in, and a manifest (every
file with size and sha256, plus the stage that wrote it) is written last, so a reader can tell a complete output
from a crashed one.

A crash leaves either the previous complete folder or nothing (at worst, between the two renames of a swap, the
old folder under `.<name>.old`, which `recover` puts back).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .io import _UMASK, _fsync_dir, sha256_file, write_json


def _old(final: Path) -> Path:
    return final.with_name(f".{final.name}.old")


def recover(final: str | Path) -> None:
    """Put back a folder left under `.<name>.old` by a crash between the two renames of `swap_in`."""
    final = Path(final)
    if not final.exists() and _old(final).is_dir():
        os.replace(_old(final), final)


def swap_in(new: str | Path, final: str | Path) -> Path:
    """Replace folder `final` by `new` (same parent): old aside, new in place, old removed."""
    new, final = Path(new), Path(final)
    recover(final)
    old = _old(final)
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.replace(final, old)
    os.replace(new, final)
    _fsync_dir(final.parent)
    shutil.rmtree(old, ignore_errors=True)
    return final


@contextlib.contextmanager
def staged_folder(final: str | Path) -> Iterator[Path]:
    """Yield an empty folder beside `final` (mode per the user's umask); swap it in on success, delete it on error."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp makes it 0700
    try:
        yield tmp
        swap_in(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _files(folder: Path, marker: str, skip: tuple[str, ...]) -> dict[str, dict]:
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if p.is_file() and p.name != marker and not p.name.startswith(".") \
                and not any(rel == s or rel.startswith(s + "/") for s in skip):
            out[rel] = {"size": p.stat().st_size, "sha256": sha256_file(p)}
    return out


def write_manifest(folder: str | Path, marker: str, *, skip: tuple[str, ...] = (), **fields) -> dict:
    """Write `folder/marker`: `fields` (stage, version, ...) and every file (but `skip`) with size and sha256."""
    data = {**fields, "files": _files(Path(folder), marker, skip)}
    write_json(Path(folder) / marker, data)
    return data


def read_manifest(folder: str | Path, marker: str) -> dict | None:
    """The manifest's contents, or None when it is missing or unreadable."""
    try:
        data = json.loads((Path(folder) / marker).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("files"), dict) else None


def manifest_ok(folder: str | Path, marker: str, *, verify: bool = False) -> bool:
    """True when the manifest exists and every file it lists has its size (and, with `verify`, its sha256).
    Entries that are a bare size (checkpoint markers from before sha256 was recorded) are checked by size."""
    data = read_manifest(folder, marker)
    if not data or not data["files"]:
        return False
    for name, entry in data["files"].items():
        path = Path(folder) / name
        size = entry["size"] if isinstance(entry, dict) else entry
        if not path.is_file() or path.stat().st_size != size:
            return False
        if verify and isinstance(entry, dict) and sha256_file(path) != entry.get("sha256"):
            return False
    return True


def promote(staging: str | Path, dest: str | Path, names: list[str], marker: str, **fields) -> dict:
    """Move the outputs `names` (files or folders) from `staging` into `dest` beside other files: the old marker
    goes first, the new one (`fields` + size and sha256 of every file moved) last. Stale outputs of the same names
    that this run does not produce are removed, so the marker always describes what is there."""
    staging, dest = Path(staging), Path(dest)
    (dest / marker).unlink(missing_ok=True)
    files: dict[str, dict] = {}
    for name in names:
        src, target = staging / name, dest / name
        if src.is_dir():
            swap_in(src, target)
            files.update({f"{name}/{k}": v for k, v in _files(target, marker, ()).items()})
        elif src.is_file():
            os.replace(src, target)
            files[name] = {"size": target.stat().st_size, "sha256": sha256_file(target)}
        elif target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)
    data = {**fields, "files": files}
    write_json(dest / marker, data)
    return data
