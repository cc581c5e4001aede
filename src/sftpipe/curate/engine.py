"""Curate's engine: inputs cut into shards, and a phase's tasks run on datatrove's executors (local or Ray).

A task is `fn(task_index)`: a picklable top-level function or dataclass that writes its own outputs atomically
(temp file + os.replace). datatrove marks each finished task in `<work_dir>/logs/<name>/completions/`, so a rerun
after a crash or a kill skips the finished ones; a task killed between its last write and its marker runs again
and overwrites the same files. A failed task's exception is raised again in the caller, whatever the executor.

    shards = plan_shards(inputs, 64 * 2**20)      # JSONL: byte ranges at line ends; Parquet: row groups
    run_tasks(ReadShard(shards, out), len(shards), EngineConfig("local", workers=8), work, "read")
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..config.curate import CurateConfig
from ..errors import RecordError, TaskError
from ..readers import SUFFIXES, jsonl_rows, parquet_rows

BLOCK = 8 * 2**20  # bytes read at a time while planning shards


@dataclass(frozen=True)
class Shard:
    """A part of one input: bytes [start, end) of a JSONL file, or row groups [start, end) of a Parquet file;
    `first_line` is the 1-based line (or row) it starts at."""

    path: str
    kind: Literal["jsonl", "parquet"]
    start: int
    end: int
    first_line: int


def plan_shards(paths: Sequence[str | Path], target_bytes: int) -> list[Shard]:
    """Cut `paths` into shards of about `target_bytes`, in input order; a line or row group is never split.

    Five lines of b"{}\\n" with target_bytes 7 -> (start, end, first_line) (0, 9, 1) and (9, 15, 4).
    """
    if target_bytes < 1:
        raise ValueError(f"target_bytes {target_bytes} must be at least 1; fix: pass a shard size in bytes")
    shards: list[Shard] = []
    for path in paths:
        suffix = Path(path).suffix.lower()
        if suffix not in SUFFIXES:
            raise ValueError(f"cannot shard {str(path)!r}: unknown extension {suffix!r} (supported: "
                             f"{', '.join(SUFFIXES)}); fix: rename the file or convert it to JSON Lines")
        shards += _parquet_shards(str(path), target_bytes) if suffix == ".parquet" else _jsonl_shards(
            str(path), target_bytes)
    return shards


def _jsonl_shards(path: str, target: int) -> list[Shard]:
    """Byte ranges that end after the first newline at or past each `target` bytes, with their first lines."""
    shards, start, first_line, newlines, pos = [], 0, 1, 0, 0
    with open(path, "rb") as f:
        while block := f.read(BLOCK):
            counted = 0  # newlines of block[:counted] are in `newlines`
            while (cut := block.find(b"\n", max(start + target - 1 - pos, 0))) >= 0:
                newlines += block.count(b"\n", counted, cut + 1)
                counted = cut + 1
                shards.append(Shard(path, "jsonl", start, pos + cut + 1, first_line))
                start, first_line = pos + cut + 1, newlines + 1
            newlines += block.count(b"\n", counted)
            pos += len(block)
    if start < pos:
        shards.append(Shard(path, "jsonl", start, pos, first_line))
    return shards


def _parquet_shards(path: str, target: int) -> list[Shard]:
    """Runs of whole row groups of about `target` compressed bytes, with their first rows."""
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata
    shards, start, size, first_row, row = [], 0, 0, 1, 1
    for g in range(meta.num_row_groups):
        size += meta.row_group(g).total_byte_size
        row += meta.row_group(g).num_rows
        if size >= target or g == meta.num_row_groups - 1:
            shards.append(Shard(path, "parquet", start, g + 1, first_row))
            start, size, first_row = g + 1, 0, row
    return shards


def iter_shard_lines(shard: Shard) -> Iterator[tuple[int, int, bytes]]:
    """(1-based line, byte offset in the file, raw bytes with the line end) per line of a JSONL shard."""
    with open(shard.path, "rb") as f:
        f.seek(shard.start)
        line, offset = shard.first_line, shard.start
        while offset < shard.end:
            raw = f.readline()
            if not raw:
                return
            yield line, offset, raw
            line, offset = line + 1, offset + len(raw)


def shard_rows(shard: Shard) -> Iterator[tuple[int, Any, RecordError | None]]:
    """What `readers.raw_rows` gives for the shard's part of its file; read it with `readers.read_rows`."""
    if shard.kind == "parquet":
        return parquet_rows(shard.path, range(shard.start, shard.end))
    return jsonl_rows(iter_shard_lines(shard))


@dataclass(frozen=True)
class EngineConfig:
    """Where tasks run: `local` processes (`workers`, default `cores()`) or Ray (`address`; none = a local
    instance with `workers` CPUs; `workers` tasks at a time, default the cluster's CPUs)."""

    kind: Literal["local", "ray"] = "local"
    workers: int | None = None
    address: str | None = None

    @classmethod
    def from_curate(cls, cfg: CurateConfig) -> EngineConfig:
        """The engine settings of a `curate:` section (`executor` and `workers`)."""
        return cls(cfg.executor.kind, cfg.workers, cfg.executor.address)


def cores() -> int:
    """The CPUs this process may use (its affinity mask: a Slurm or container limit, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def run_tasks(fn: Callable[[int], None], n_tasks: int, cfg: EngineConfig, work_dir: Path, name: str,
              progress: Callable[[int], None] | None = None) -> None:
    """Run fn(0) .. fn(n_tasks - 1) on the configured executor, skipping tasks an earlier run finished;
    `progress(k)` is called as k more tasks are done.

    Logs (one per task, plus executor.log) and completion markers go to `work_dir/logs/name`, which must be on a
    filesystem every Ray node shares.
    """
    if cfg.kind not in ("local", "ray"):
        raise ValueError(f"unknown executor kind {cfg.kind!r} (allowed: local, ray); fix: set curate.executor.kind")
    if n_tasks < 1:
        return
    from loguru import logger

    from . import executors

    log_dir = (Path(work_dir) / "logs" / name).resolve()
    shutil.rmtree(log_dir / "errors", ignore_errors=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    executors.route_logs(log_dir)
    try:
        if cfg.kind == "local":
            executor = executors.local(fn, n_tasks, cfg.workers or cores(), log_dir)
        else:
            executor = executors.ray(fn, n_tasks, cfg.workers, cfg.address, log_dir)
        with _watch(log_dir / "completions", progress):
            try:
                executor.run()
            except TaskError:
                pass  # the task's own exception is raised below
    finally:
        logger.remove()  # datatrove logs nowhere outside run_tasks
    left = executor.get_incomplete_ranks(skip_completed=True)
    for rank in left:
        if (saved := executors.error_path(log_dir, rank)).is_file():
            error = executors.load_error(saved)
            error.add_note(f"task {rank} of {name!r}; its log: {log_dir / 'logs' / f'task_{rank:05d}.log'}")
            raise error
    if left:
        raise TaskError(f"{len(left)} of {n_tasks} tasks of {name!r} did not finish (first: task {left[0]}); their "
                        f"logs are in {log_dir / 'logs'}; fix: rerun (finished tasks are skipped)")


@contextmanager
def _watch(folder: Path, progress: Callable[[int], None] | None, every: float = 0.5) -> Iterator[None]:
    """Call `progress` with the number of new files in `folder` (datatrove's completion markers) while the block
    runs (the tasks may run in other processes or on other machines)."""
    if progress is None:
        yield
        return
    seen, stop = 0, threading.Event()

    def poll() -> None:
        nonlocal seen
        while True:
            stopping = stop.wait(every)
            n = len(os.listdir(folder)) if folder.is_dir() else 0
            if n > seen:
                progress(n - seen)
                seen = n
            if stopping:
                return
    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    try:
        yield
    finally:
        stop.set()
        watcher.join()
