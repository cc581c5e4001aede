"""datatrove's executors, as curate's engine uses them (imported only when tasks run: datatrove takes ~1 s to load).

A task function becomes a one-step datatrove pipeline; its executor prints nothing on the console (the task logs
and `executor.log` keep it all), and a failed task's exception is kept (as JSON) next to its log for the caller.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import os
from collections.abc import Callable
from pathlib import Path

from datatrove.executor import LocalPipelineExecutor
from datatrove.executor.ray import RayPipelineExecutor
from datatrove.pipeline.base import PipelineStep
from loguru import logger

from ..errors import RecordError, TaskError

RAY_OBJECT_STORE = 128 * 2**20  # a local Ray instance only carries the task function through its object store
RAY_MEM_PER_CPU_GB = 0.5  # what a task reserves on a Ray node (a scheduling hint: a task holds one shard)


def route_logs(log_dir: str | Path) -> None:
    """datatrove's own lines (loguru) go to `log_dir/executor.log`, not to the console."""
    logger.remove()
    logger.add(os.path.join(log_dir, "executor.log"), level="INFO")


def error_path(log_dir: str | Path, rank: int) -> Path:
    """Where task `rank`'s exception is kept until the caller raises it."""
    return Path(log_dir) / "errors" / f"{rank:05d}.json"


class Task(PipelineStep):
    """fn as a datatrove pipeline step: run(data, rank, world_size) calls fn(rank)."""

    type = "sftpipe"

    def __init__(self, fn: Callable[[int], None], log_dir: str):
        self.name = getattr(fn, "__name__", type(fn).__name__)
        super().__init__()
        self.fn, self.log_dir = fn, log_dir

    def run(self, data, rank: int = 0, world_size: int = 1) -> None:
        try:
            self.fn(rank)
        except Exception as e:
            save_error(e, error_path(self.log_dir, rank))
            raise TaskError(f"task {rank} failed: {type(e).__name__}: {e}") from None


def save_error(e: Exception, path: Path) -> None:
    """Keep `e` for the caller as JSON (never pickle: the work folder may sit on a shared filesystem)."""
    record = {"type": type(e).__name__, "builtin": type(e).__module__ == "builtins", "message": str(e)}
    if isinstance(e, RecordError):
        record["fields"] = {k: getattr(e, k) for k in ("reason", "message", "path", "line", "index", "field", "fix")}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(record), encoding="utf-8")
    os.replace(tmp, path)


def load_error(path: Path) -> Exception:
    """The exception `save_error` kept: a RecordError or a built-in exception as it was, anything else as a
    TaskError with its type and text."""
    record = json.loads(path.read_text(encoding="utf-8"))
    if "fields" in record:
        return RecordError(**record["fields"])
    kind = getattr(builtins, record["type"], None) if record["builtin"] else None
    if isinstance(kind, type) and issubclass(kind, Exception):
        return kind(record["message"])
    return TaskError(f"{record['type']}: {record['message']}")


class _Quiet:
    """Mixin for datatrove executors: what a task prints on stderr (its errors) goes to executor.log; its own log
    keeps everything."""

    def _run_for_rank(self, rank: int, local_rank: int = 0, node_rank: int = -1):
        log_dir = self.logging_dir.path
        with open(os.path.join(log_dir, "executor.log"), "a") as console, contextlib.redirect_stderr(console):
            try:  # datatrove prints a task's info lines on stderr for local_rank 0 only
                return super()._run_for_rank(rank, local_rank + 1, node_rank)
            finally:
                route_logs(log_dir)


class Local(_Quiet, LocalPipelineExecutor):
    """LocalPipelineExecutor, quiet."""


class Ray(_Quiet, RayPipelineExecutor):
    """RayPipelineExecutor, quiet."""


def local(fn: Callable[[int], None], n_tasks: int, workers: int, log_dir: Path) -> Local:
    """`workers` processes on this machine (1 = in this process, in order)."""
    return Local(pipeline=[Task(fn, str(log_dir))], tasks=n_tasks, workers=min(workers, n_tasks),
                 logging_dir=str(log_dir))


def ray(fn: Callable[[int], None], n_tasks: int, workers: int | None, address: str | None, log_dir: Path) -> Ray:
    """Tasks on the Ray cluster at `address` (`workers` at a time, default its CPUs), or on a local instance with
    `workers` CPUs that is started once and stays up until the process exits."""
    try:
        import ray as ray_
    except ImportError as e:
        raise ImportError("curate.executor.kind 'ray' needs Ray, which is not installed; fix: pip install "
                          "'sftpipe[ray]' (ray==2.60.0), or set curate.executor.kind: local") from e
    if not ray_.is_initialized():
        alone = address is None
        ray_.init(address=address, num_cpus=workers if alone else None, include_dashboard=False,
                  log_to_driver=False, object_store_memory=RAY_OBJECT_STORE if alone else None,
                  configure_logging=False)
    workers = workers or int(ray_.cluster_resources().get("CPU", 1))
    return Ray(pipeline=[Task(fn, str(log_dir))], tasks=n_tasks, workers=min(workers, n_tasks),
               logging_dir=str(log_dir), mem_per_cpu_gb=RAY_MEM_PER_CPU_GB)
