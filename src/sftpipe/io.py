"""Atomic file writes (temp file in the same folder, fsync, `os.replace`) and content hashes.

A crash or an exception mid-write leaves the previous file untouched and no temp file behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

JSONL_SUFFIXES = (".jsonl", ".json")
PARQUET_SUFFIXES = (".parquet",)

# Read once at import: os.umask can only be read by setting it, which is not thread-safe later.
_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def _atomic_open(path: str | os.PathLike) -> Iterator[IO[bytes]]:
    """Yield a binary temp file next to `path`; on success fsync it and move it over `path`, on error delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        # mkstemp makes the file 0600; give it the mode a plain open() would (or the old file's mode).
        mode = stat.S_IMODE(path.stat().st_mode) if path.exists() else 0o666 & ~_UMASK
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable; not every platform lets a folder be opened, which is fine."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically, creating parent folders."""
    with _atomic_open(path) as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` as UTF-8 to `path` atomically (no newline translation)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    """Write `obj` as pretty JSON (keys in insertion order, non-ASCII kept) with a trailing newline."""
    atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False, sort_keys=False) + "\n")


def write_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> int:
    """Stream `records` to `path` as JSON Lines, atomically; return how many were written.

    >>> import tempfile, pathlib; p = pathlib.Path(tempfile.mkdtemp()) / "a.jsonl"
    >>> write_jsonl(p, [{"q": "é"}, {"q": 2}]), p.read_text(encoding="utf-8")
    (2, '{"q": "é"}\\n{"q": 2}\\n')
    """
    n = 0
    with _atomic_open(path) as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False).encode("utf-8"))
            f.write(b"\n")
            n += 1
    return n


def _arrow_table(records: list[dict]) -> pa.Table:
    """Build a table whose columns are the union of all records' keys (first-seen order; missing -> null)."""
    import pyarrow as pa  # lazy: keeps `import sftpipe.io` (and the CLI) fast

    names = list(dict.fromkeys(k for r in records for k in r))
    columns = {}
    for name in names:
        try:
            columns[name] = pa.array([r.get(name) for r in records])
        except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
            raise ValueError(f"column {name!r} cannot be stored in Parquet: {e}. Fix: give it one type in every "
                             "record (e.g. content always a string), or write .jsonl instead") from e
    return pa.table(columns)


def write_parquet(path: str | os.PathLike, records: list[dict]) -> int:
    """Write `records` to `path` as one Parquet table, atomically; return how many rows were written."""
    import pyarrow.parquet as pq

    records = list(records)
    table = _arrow_table(records)
    with _atomic_open(path) as f:
        pq.write_table(table, f)
    return len(records)


def write_records(path: str | os.PathLike, records: Iterable[dict]) -> int:
    """Write `records` as JSON Lines (.jsonl/.json) or Parquet (.parquet), chosen by the file's extension."""
    suffix = Path(path).suffix.lower()
    if suffix in JSONL_SUFFIXES:
        return write_jsonl(path, records)
    if suffix in PARQUET_SUFFIXES:
        return write_parquet(path, list(records))
    raise ValueError(f"cannot write {os.fspath(path)!r}: unknown extension {suffix!r} "
                     f"(supported: {', '.join(JSONL_SUFFIXES + PARQUET_SUFFIXES)}). Fix: rename the output file")


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def require_files(paths: Iterable[str | os.PathLike], key: str, made_by: dict[str, str] | None = None) -> None:
    """Every path is a readable file, else one error listing each that is not (the config key and the fix).
    `made_by` maps a folder to the command that writes it: a file missing there says to run that first."""
    from .errors import ConfigError

    def fix(p: Path) -> str:
        for folder, command in (made_by or {}).items():
            if p.resolve().is_relative_to(Path(folder).resolve()):
                return f"run `{command}` first: it writes {folder}/"
        return "give an existing JSONL/Parquet file"

    problems = [f"{p}: {'is a folder' if Path(p).is_dir() else 'file not found'}; fix: {fix(Path(p))}"
                for p in paths if not Path(p).is_file()]
    if problems:
        raise ConfigError(key, problems)


def require_free_port(host: str, port: int, key: str) -> None:
    """Refuse, with the fix, to start a server on an address something already listens on (instead of the
    server's own traceback after loading)."""
    import socket

    from .errors import ConfigError

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do: closed connections do not count
        try:
            s.bind((host, port))
        except OSError as e:
            raise ConfigError(key, [f"{host}:{port} cannot be used ({e.strerror}); fix: pass another {key}, or stop "
                                    "what listens there"]) from None
