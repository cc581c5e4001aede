"""Resuming with another process count keeps the global batch: a run checkpointed at 2 processes and resumed at
1 (and the other way round) trains on the same examples with the same losses as an uninterrupted run, and run.json
records each segment's world size, gradient accumulation and steps."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml

from sftpipe.errors import ConfigError
from sftpipe.runs import RunInfo
from sftpipe.stages.train import run
from sftpipe.train.lifecycle import global_accum, resume_segments

TOLERANCE = 1e-5  # absolute, per logged loss: the same micro-batches in the same order (measured: below 1e-6)
COMMON = ["train.max_steps=6", "train.save_steps=3", "train.batch_size=2", "train.logging_steps=1",
          "lora.dropout=0"]  # dropout draws differ per process


def torchrun(cfg, tmp_path, *flags: str) -> None:
    """`sftpipe train` on 2 CPU processes (gloo) for `cfg`."""
    path = tmp_path / f"{cfg.name}.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
           "sftpipe.cli", "train", "-c", str(path), *flags]
    res = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]


def record(run_dir) -> dict:
    return json.loads((run_dir / "run.json").read_text())


def losses(info: dict) -> dict[int, float]:
    return {m["step"]: m["loss"] for m in info["metrics"] if "loss" in m}


def assert_same_run(got: dict, want: dict) -> None:
    assert sorted(losses(got)) == list(range(1, 7))
    assert max(abs(losses(got)[s] - losses(want)[s]) for s in losses(want)) <= TOLERANCE
    assert got["examples_seen"] == want["examples_seen"] and sum(want["examples_seen"].values()) > 12
    assert got["results"]["trained_tokens_seen"] == want["results"]["trained_tokens_seen"]
    assert got["effective_batch"] == want["effective_batch"]


@pytest.fixture()
def reference(make_cfg):
    """6 uninterrupted steps on 1 process at grad_accum 2: 2 micro-batches per optimizer step."""
    return record(run(make_cfg(*COMMON, "train.grad_accum=2", name="reference"), progress=False).run_dir)


def test_two_processes_then_one(make_cfg, tmp_path, reference):
    """~25 s: 2 processes to checkpoint-3 (and on), then resumed from checkpoint-3 on 1 process."""
    cfg = make_cfg(*COMMON, "train.grad_accum=1", name="two-then-one")
    torchrun(cfg, tmp_path)
    run_dir = tmp_path / "runs" / "two-then-one"
    shutil.rmtree(run_dir / "checkpoints" / "checkpoint-6")  # as if killed after checkpoint-3
    resumed = run(cfg, resume=True, progress=False)
    assert resumed.resumed_from == "checkpoint-3" and resumed.world_size == 1
    info = record(run_dir)
    assert_same_run(info, reference)
    assert info["world_size"] == 1 and info["segments"] == [
        {"world_size": 2, "grad_accum": 1, "from_step": 0, "to_step": 3},
        {"world_size": 1, "grad_accum": 2, "from_step": 3, "to_step": 6}]


def test_one_process_then_two(make_cfg, tmp_path, reference):
    """~25 s: 1 process to checkpoint-3 (and on), then resumed from checkpoint-3 on 2 processes."""
    cfg = make_cfg(*COMMON, "train.grad_accum=2", name="one-then-two")
    first = run(cfg, progress=False)
    shutil.rmtree(first.run_dir / "checkpoints" / "checkpoint-6")
    torchrun(cfg, tmp_path, "--resume")
    info = record(first.run_dir)
    assert_same_run(info, reference)
    assert info["world_size"] == 2 and info["segments"] == [
        {"world_size": 1, "grad_accum": 2, "from_step": 0, "to_step": 3},
        {"world_size": 2, "grad_accum": 1, "from_step": 3, "to_step": 6}]


def test_a_batch_that_cannot_be_kept_is_refused_with_the_launches_that_work():
    with pytest.raises(ConfigError) as e:
        global_accum(old_world=2, old_accum=2, asked=2, configured=2, world=3)
    text = str(e.value)
    assert "3 processes cannot split the run's 4 micro-batches" in text
    assert "1 process (torchrun --nproc_per_node 1 ...) or 2 processes" in text and "4 processes" in text
    with pytest.raises(ConfigError, match="train.grad_accum: 4 x 2 process"):  # a changed value must keep it
        global_accum(old_world=2, old_accum=2, asked=4, configured=2, world=2)
    assert global_accum(old_world=2, old_accum=2, asked=1, configured=2, world=4) == 1  # changed, and keeps it


def test_segments_end_where_the_resume_starts():
    old = RunInfo(config={"train": {"grad_accum": 1}}, base_model="m", mode="lora", world_size=2,
                  segments=[{"world_size": 2, "grad_accum": 1, "from_step": 0, "to_step": 4},
                            {"world_size": 1, "grad_accum": 2, "from_step": 4, "to_step": None}])
    assert resume_segments(old, "train", 3, 4, 1) == [  # an older checkpoint: the later segment is dropped
        {"world_size": 2, "grad_accum": 1, "from_step": 0, "to_step": 3},
        {"world_size": 4, "grad_accum": 1, "from_step": 3, "to_step": None}]
    legacy = RunInfo(config={"train": {"grad_accum": 3}}, base_model="m", mode="lora", world_size=2)
    assert resume_segments(legacy, "train", 5, 1, 6)[0] == {"world_size": 2, "grad_accum": 3, "from_step": 0,
                                                              "to_step": 5}
    assert resume_segments(None, "train", 0, 2, 1) == [{"world_size": 2, "grad_accum": 1, "from_step": 0,
                                                         "to_step": None}]
