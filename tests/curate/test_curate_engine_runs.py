"""curate on its engine: a run that failed part way is finished by running it again (finished shard tasks are
skipped, the output is a clean run's), and a Ray cluster gives the local executor's output."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from sftpipe.curate import pipeline
from sftpipe.curate.pipeline import run_curate
from sftpipe.curate.shard import ShardTask
from sftpipe.curated import MARKER

from .test_curate_pipeline import RAW, config

SRC = Path(__file__).resolve().parents[2] / "src"


def small_shards(monkeypatch, size: int) -> None:
    """Cut the tiny inputs into shards of about `size` bytes, so a run has several tasks."""
    plan = pipeline.plan_shards
    monkeypatch.setattr(pipeline, "plan_shards", lambda paths, _: plan(paths, size))


def manifest(folder: Path) -> dict:
    return json.loads((folder / MARKER).read_text())["content_hashes"]


def test_a_failed_run_is_finished_by_a_rerun_that_skips_finished_tasks(tmp_path, monkeypatch):
    small_shards(monkeypatch, 1500)
    clean = run_curate([RAW], config(), tmp_path / "clean")
    calls: list[tuple[str, int]] = []
    real = ShardTask.__call__
    fail = [True]

    def flaky(self, i):  # workers: 1 runs the tasks in this process, in order
        calls.append((self.prefix, i))
        if fail[0] and (self.prefix, i) == ("", 3):
            raise RuntimeError("worker lost")
        return real(self, i)

    monkeypatch.setattr(ShardTask, "__call__", flaky)
    with pytest.raises(RuntimeError, match="worker lost"):
        run_curate([RAW], config(), tmp_path / "out")
    assert calls == [("", 0), ("", 1), ("", 2), ("", 3)]
    assert not (tmp_path / "out").exists() and len(list(tmp_path.glob(".out.work-*"))) == 1
    calls.clear()
    fail[0] = False
    again = run_curate([RAW], config(), tmp_path / "out")
    main = [i for prefix, i in calls if prefix == ""]
    assert main[0] == 3 and len(main) > 1  # tasks 0-2 finished before: not run again
    assert again.hashes == clean.hashes and manifest(tmp_path / "out") == manifest(tmp_path / "clean")
    assert not list(tmp_path.glob(".out.work-*"))


@pytest.mark.slow
def test_ray_gives_the_output_of_the_local_executor(tmp_path, monkeypatch):
    """A local Ray instance (started by the run, ~5-15 s here; ~2-3 s per task) against two local processes."""
    ray = pytest.importorskip("ray")
    small_shards(monkeypatch, 4000)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")])))
    local = run_curate([RAW], config(workers=2), tmp_path / "local")
    try:
        remote = run_curate([RAW], config(workers=2, executor={"kind": "ray"}), tmp_path / "ray")
    finally:
        ray.shutdown()
    assert manifest(tmp_path / "ray") == manifest(tmp_path / "local") == local.hashes
    assert remote.report["counts"] == local.report["counts"]
