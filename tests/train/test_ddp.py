"""The same `sftpipe train` under torchrun: 2 CPU processes (gloo) at batch b == 1 process at grad_accum 2, and
only rank 0 renders the data (rank 1 waits, then memory-maps the same dataset)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import yaml
from safetensors.torch import load_file

from sftpipe.stages.train import run

COUNTING_CLI = """
import os
from sftpipe import tokenized
real = tokenized.build
def build(*args, **kwargs):
    with open(os.environ["BUILD_LOG"], "a") as f:
        f.write(os.environ["RANK"] + "\\n")
    return real(*args, **kwargs)
tokenized.build = build
from sftpipe.cli import app
app()
"""

DDP_TOLERANCE = 1e-5  # absolute, on every logged loss and every adapter weight (measured: 0.0)


def test_two_processes_match_one_process_with_accumulation(make_cfg, tmp_path):
    """~15 s: two torchrun workers start Python, torch and transformers each."""
    common = ["train.max_steps=4", "train.batch_size=2", "lora.dropout=0"]  # dropout draws differ per process
    one = run(make_cfg(*common, "train.grad_accum=2", name="one"), progress=False)
    cfg = make_cfg(*common, "train.grad_accum=1", name="two")
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    builds = tmp_path / "builds.txt"
    cli = tmp_path / "counting_cli.py"  # sftpipe's CLI with each dataset build logged with its rank
    cli.write_text(COUNTING_CLI, encoding="utf-8")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(cli), "train", "-c", str(path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "BUILD_LOG": str(builds),
           "SFTPIPE_TOKENIZED_CACHE": str(tmp_path / "fresh-cache")}  # not the dataset `one` built
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert builds.read_text().split() == ["0"]
    two_dir = one.run_dir.parent / "two"
    info = json.loads((two_dir / "run.json").read_text())
    one_info = json.loads((one.run_dir / "run.json").read_text())
    assert info["world_size"] == 2 and info["effective_batch"] == one_info["effective_batch"]
    assert info["examples_seen"] == one_info["examples_seen"] and sum(info["examples_seen"].values()) > 8
    metrics = {n: [m for m in json.loads((d / "run.json").read_text())["metrics"] if "loss" in m]
               for n, d in (("one", one.run_dir), ("two", two_dir))}
    assert [m["num_input_tokens_seen"] for m in metrics["one"]] == [m["num_input_tokens_seen"]
                                                                    for m in metrics["two"]]
    for a, b in zip(metrics["one"], metrics["two"], strict=True):
        assert abs(a["loss"] - b["loss"]) <= DDP_TOLERANCE and abs(a["grad_norm"] - b["grad_norm"]) <= 1e-4
    wa, wb = load_file(one.run_dir / "adapter_model.safetensors"), load_file(two_dir / "adapter_model.safetensors")
    assert wa.keys() == wb.keys() and max((wa[k] - wb[k]).abs().max().item() for k in wa) <= DDP_TOLERANCE


FAILING_CLI = """
import os
from sftpipe import tokenized
def build(*args, **kwargs):
    raise OSError("no space left on device (a test's stand-in)")
tokenized.build = build
from sftpipe.cli import app
app()
"""


def test_a_failed_build_releases_the_waiting_process(make_cfg, tmp_path):
    """Rank 0's render fails: rank 1 stops at once with an error that points at it, instead of waiting out the
    process group's timeout (30 minutes)."""
    path = tmp_path / "fail.yaml"
    path.write_text(yaml.safe_dump(make_cfg("train.max_steps=1", name="fail").model_dump(mode="json")))
    cli = tmp_path / "failing_cli.py"
    cli.write_text(FAILING_CLI, encoding="utf-8")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(cli), "train", "-c", str(path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SFTPIPE_TOKENIZED_CACHE": str(tmp_path / "fresh-cache")}
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert res.returncode != 0
    assert "no space left on device" in res.stderr
    assert "another process failed to render the dataset" in res.stderr, res.stderr[-3000:]
