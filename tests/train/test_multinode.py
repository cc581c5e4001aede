"""The README's multi-node recipe, run as written: 2 "nodes" of 1 process each as 2 torchrun groups on localhost.
With a shared run folder, doctor's probe passes on both and training matches 1 process at grad_accum 2; with a
folder each node has to itself, doctor fails on both nodes and training stops before its first step."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import yaml

from sftpipe.stages.train import run

from ..readme_blocks import block_after, commands


def recipe() -> list[str]:
    """The README block after the recipe mark, one command per entry (continuations joined), exports left out."""
    return [c for c in commands(block_after("multi-node recipe")) if not c.startswith("export ")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def nodes(command: str, cwds: list[Path], tmp_path: Path) -> list[subprocess.CompletedProcess]:
    """`command` on 2 nodes at once (node i in cwds[i], its own dataset cache), as the recipe's variables say."""
    port = free_port()
    procs = []
    for rank, cwd in enumerate(cwds):
        env = {**os.environ, "NNODES": "2", "NPROC": "1", "NODE_RANK": str(rank), "HEAD": "127.0.0.1",
               "PORT": str(port), "OMP_NUM_THREADS": "1", "COLUMNS": "300",  # doctor's table unwrapped
               "SFTPIPE_TOKENIZED_CACHE": str(tmp_path / f"cache{rank}"),
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}  # torchrun
        procs.append(subprocess.Popen(["bash", "-c", command], cwd=cwd, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=300)
        out.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    return out


def write_config(cfg, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    data = cfg.model_dump(mode="json")
    data["train"]["output_dir"] = "runs"  # relative: one folder only where the nodes share the working folder
    (folder / "sftpipe.yaml").write_text(yaml.safe_dump(data))


def test_the_readme_recipe_on_a_shared_folder(make_cfg, tmp_path):
    """~30 s: doctor passes on both nodes; the 2-node run equals one process with grad_accum 2."""
    doctor, train = recipe()
    assert "sftpipe.cli doctor" in doctor and "sftpipe.cli train" in train and "--nnodes $NNODES" in train
    common = ["train.max_steps=4", "train.batch_size=2", "lora.dropout=0", "train.logging_steps=1"]
    one = run(make_cfg(*common, "train.grad_accum=2", name="one"), progress=False)
    shared = tmp_path / "shared"
    write_config(make_cfg(*common, "train.grad_accum=1", name="two-nodes"), shared)
    for res in nodes(doctor, [shared, shared], tmp_path):
        assert res.returncode == 0, res.stderr[-2000:]
        assert re.search(r"shared-run-folder\s*│\s*PASS", res.stdout), res.stdout
    for res in nodes(train, [shared, shared], tmp_path):
        assert res.returncode == 0, res.stderr[-3000:]
    info = json.loads((shared / "runs" / "two-nodes" / "run.json").read_text())
    want = json.loads((one.run_dir / "run.json").read_text())
    assert info["world_size"] == 2 and info["segments"][0]["world_size"] == 2
    losses = [[m["loss"] for m in i["metrics"] if "loss" in m] for i in (info, want)]
    assert len(losses[0]) == 4 and max(abs(a - b) for a, b in zip(*losses)) <= 1e-5


def test_a_folder_that_is_not_shared_is_found_by_doctor_and_stops_training(make_cfg, tmp_path):
    """~20 s: each node's `runs` is its own folder."""
    doctor, train = recipe()
    cfg = make_cfg("train.max_steps=2", "train.batch_size=2", name="apart")
    cwds = [tmp_path / "node0", tmp_path / "node1"]
    for cwd in cwds:
        write_config(cfg, cwd)
    for res in nodes(doctor, cwds, tmp_path):
        assert res.returncode == 1 and re.search(r"shared-run-folder\s*│\s*FAIL", res.stdout), res.stdout
        assert "cannot see" in res.stdout
    for res in nodes(train, cwds, tmp_path):
        assert res.returncode != 0 and "train.output_dir" in res.stderr and "mounts at the same path" in res.stderr
    assert not list((cwds[0] / "runs" / "apart").glob("checkpoints/checkpoint-*"))
    assert not list(tmp_path.glob("node*/runs/.shared-probe-*"))
    assert not list(tmp_path.glob("node*/runs/*/.shared-probe-*"))
