"""Checkpoints: partial folders are never resumed from; kill -9 mid-training + --resume reaches the same loss."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from safetensors.torch import load_file

from sftpipe.errors import ConfigError
from sftpipe.runs.checkpoints import is_complete, latest_checkpoint, remove_partial, write_marker
from sftpipe.stages.train import run

RESUME_TOLERANCE = 1e-5  # absolute, on every logged loss and every adapter weight (measured: 0.0)


def _fake_checkpoint(folder, step, *, marked=True):
    ckpt = folder / f"checkpoint-{step}"
    ckpt.mkdir(parents=True)
    (ckpt / "adapter_model.safetensors").write_bytes(b"x" * 100)
    (ckpt / "trainer_state.json").write_text("{}")
    if marked:
        write_marker(ckpt, step)
    return ckpt


def test_a_partial_checkpoint_is_never_the_latest(tmp_path):
    good = _fake_checkpoint(tmp_path, 2)
    _fake_checkpoint(tmp_path, 4, marked=False)  # killed before the marker was written
    truncated = _fake_checkpoint(tmp_path, 6)
    (truncated / "adapter_model.safetensors").write_bytes(b"x" * 10)  # a file cut short after marking
    half_deleted = _fake_checkpoint(tmp_path, 8)
    (half_deleted / "trainer_state.json").unlink()  # killed during rotation's rmtree
    assert latest_checkpoint(tmp_path) == good
    assert not is_complete(truncated) and not is_complete(half_deleted)
    assert sorted(remove_partial(tmp_path)) == ["checkpoint-4", "checkpoint-6", "checkpoint-8"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-2"]


def test_resume_refuses_without_a_checkpoint_or_with_another_config(make_cfg):
    cfg = make_cfg("train.max_steps=2")
    with pytest.raises(ConfigError, match="no complete checkpoint"):
        run(cfg, resume=True, progress=False)
    run(cfg, progress=False)
    with pytest.raises(ConfigError, match="train.lr"):
        run(make_cfg("train.max_steps=2", "train.lr=0.5"), resume=True, progress=False)
    with pytest.raises(ConfigError, match="exists"):
        run(cfg, progress=False)  # neither --resume nor train.overwrite


def _losses(run_dir):
    metrics = json.loads((run_dir / "run.json").read_text())["metrics"]
    return {m["step"]: m["loss"] for m in metrics if "loss" in m}


def test_kill_9_then_resume_reaches_the_uninterrupted_loss(make_cfg, tmp_path):
    """~15 s: a training subprocess is killed right after its first complete checkpoint, then resumed."""
    common = ["train.max_steps=40", "train.save_steps=5", "train.save_total_limit=3", "train.batch_size=2"]
    reference = run(make_cfg(*common, name="reference"), progress=False)
    cfg = make_cfg(*common, name="killed")
    path = tmp_path / "killed.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "sftpipe.cli", "train", "-c", str(path)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpts = reference.run_dir.parent / "killed" / "checkpoints"
    deadline = time.time() + 120
    while proc.poll() is None and time.time() < deadline and latest_checkpoint(ckpts) is None:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, f"training ended before the kill: {err.decode()[-2000:]}"
    run_dir = ckpts.parent
    assert json.loads((run_dir / "run.json").read_text())["status"] == "running"
    assert not (run_dir / "adapter_model.safetensors").exists()

    resumed = run(cfg, resume=True, progress=False)
    assert resumed.resumed_from is not None and int(resumed.resumed_from.split("-")[1]) < 40
    ref_losses, losses = _losses(reference.run_dir), _losses(run_dir)
    assert sorted(losses) == list(range(1, 41))
    worst = max(abs(ref_losses[s] - losses[s]) for s in ref_losses)
    print(f"killed, resumed from {resumed.resumed_from}: max |loss difference| over 40 steps = {worst:.2e}")
    assert worst <= RESUME_TOLERANCE
    assert abs(resumed.final_loss - reference.final_loss) <= RESUME_TOLERANCE
    a = load_file(reference.run_dir / "adapter_model.safetensors")
    b = load_file(run_dir / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= RESUME_TOLERANCE
    assert all(torch.isfinite(t).all() for t in b.values())


def test_after_resume_run_json_covers_the_whole_run(make_cfg):
    """Mean train loss and trained tokens count every step, not only those after the resume."""
    common = ["train.max_steps=6", "train.save_steps=3", "train.logging_steps=1"]
    reference = run(make_cfg(*common, name="whole"), progress=False)
    cfg = make_cfg(*common, name="resumed")
    first = run(cfg, progress=False)
    shutil.rmtree(first.run_dir / "checkpoints" / "checkpoint-6")  # as if killed after checkpoint-3
    resumed = run(cfg, resume=True, progress=False)
    assert resumed.resumed_from == "checkpoint-3"
    want = json.loads((reference.run_dir / "run.json").read_text())["results"]
    got = json.loads((resumed.run_dir / "run.json").read_text())["results"]
    assert got["trained_tokens_seen"] == want["trained_tokens_seen"]
    seen = [json.loads((r.run_dir / "run.json").read_text())["examples_seen"] for r in (reference, resumed)]
    assert seen[0] == seen[1] and sum(seen[0].values()) > 6
    assert got["mean_train_loss"] == pytest.approx(want["mean_train_loss"], abs=RESUME_TOLERANCE)
