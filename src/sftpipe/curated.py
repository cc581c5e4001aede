"""The curated folder as a contract: `sftpipe curate` writes it (`write_folder`), train, dpo and doctor read it.

A curated folder holds one `<split>.jsonl` per split, `rejected.jsonl` (every dropped record with its stage and
reason) and `report.json`, committed as a whole: written beside, the manifest `sftpipe_curate.json` (every file
with size and sha256, plus each output's content hash) last, then swapped in. A reader refuses a file of a
curated folder whose manifest is missing or no longer matches (`require_curated`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .commit import manifest_ok, staged_folder, write_manifest
from .errors import ConfigError
from .io import write_json
from .readers import raw_rows

MARKER = "sftpipe_curate.json"  # the curated folder's manifest, written last
REPORT = "report.json"
REJECTED = "rejected.jsonl"
HASH_DEFINITION = ("sha256 over the file's records in file order, each serialized as canonical JSON "
                   "(json.dumps with sort_keys=True, ensure_ascii=False, separators=(',', ':')), UTF-8, "
                   "followed by one newline; independent of how the file itself is formatted")
FILES_HASH_DEFINITION = (
    "sha256 over the records of the split's files in the order given (file order within each file), each record "
    "as canonical JSON (json.dumps sort_keys=True, ensure_ascii=False, separators=(',', ':')), UTF-8, plus a "
    "newline; for a single curated file this equals the hash in its curate report.json (" + HASH_DEFINITION + ")")


def canonical_line(record: dict) -> bytes:
    """One record as canonical JSON (sorted keys, no spaces, UTF-8, non-ASCII kept) plus a newline.

    >>> canonical_line({"b": 1, "a": "é"})
    b'{"a":"\\xc3\\xa9","b":1}\\n'
    """
    return json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"


def content_hash(records: Iterable[dict]) -> str:
    """The content hash of a list of records (see HASH_DEFINITION).

    >>> content_hash([{"a": 1}]) == hashlib.sha256(b'{"a":1}\\n').hexdigest()
    True
    """
    h = hashlib.sha256()
    for r in records:
        h.update(canonical_line(r))
    return h.hexdigest()


def files_hash(paths: Iterable[str | Path]) -> str:
    """The content hash of the raw records of JSONL / Parquet files, in order (see FILES_HASH_DEFINITION); how the
    files are formatted does not matter."""
    h = hashlib.sha256()
    for path in paths:
        for _, obj, _ in raw_rows(path):
            h.update(canonical_line(obj))
    return h.hexdigest()


def write_folder(out_dir: Path, write: Callable[[Path], dict[str, str]], report: dict[str, Any]) -> dict[str, str]:
    """Have `write(folder)` write the outputs into a folder beside `out_dir` and return each one's content hash
    (it may fill `report` too); then write `report` (its "hashes" set) and the manifest last, and swap the folder
    in."""
    with staged_folder(out_dir) as tmp:
        hashes = write(tmp)
        report["hashes"] = hashes
        write_json(tmp / REPORT, report)
        write_manifest(tmp, MARKER, stage="curate", version=1, content_hashes=hashes)
    return hashes


def check_out_dir(out_dir: Path, inputs: list[Path]) -> None:
    """`out_dir` is replaced as a whole: refuse one that holds inputs or files curate did not write."""
    out = Path(out_dir).resolve()
    inside = [str(p) for p in inputs if out in Path(p).resolve().parents]
    if inside:
        raise ConfigError("curate.out_dir", [f"{out_dir} holds the input(s) {', '.join(inside)}, and curate "
                                             "replaces its out_dir as a whole; fix: write to another folder"])
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file() and not (out / REPORT).is_file():
        raise ConfigError("curate.out_dir", [f"{out_dir} holds files that curate did not write, and curate replaces "
                                             "its out_dir as a whole; fix: choose an empty or new folder"])


def require_curated(path: str | Path) -> None:
    """Refuse a file of a curated folder (one with report.json) whose manifest is missing or does not match."""
    folder = Path(path).parent
    if (folder / REPORT).is_file() and (folder / REJECTED).is_file() and not manifest_ok(folder, MARKER):
        raise ConfigError("data", [f"{path}: its curated folder {folder} has no valid {MARKER} (curate did not "
                                   "finish, or a file changed since); fix: re-run `sftpipe curate`"])
