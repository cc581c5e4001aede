"""Hub ids through huggingface_hub's cache, offline (HF_HUB_OFFLINE), with a cache this test fills: the real CLI
trains on `owner/name`, run.json pins the commit, the card and adapter name the hub id (no local path), a pinned
revision resolves, and a model missing from the cache is one line naming the cache and the fix."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ..readme_blocks import block_after, commands as readme_commands

REPO = "sftpipe-test/tiny-llama"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture()
def hub_cache(tiny_dir, tmp_path) -> Path:
    """A huggingface_hub cache holding REPO at COMMIT (branch main), laid out as the library writes it."""
    root = tmp_path / "hub"
    repo = root / f"models--{REPO.replace('/', '--')}"
    shutil.copytree(tiny_dir, repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    return root


def sftpipe(args: list[str], hub: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_CACHE": str(hub), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "sftpipe.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def test_a_hub_id_trains_offline_from_the_cache_and_the_run_pins_its_commit(hub_cache, data_dir, tmp_path):
    res = sftpipe(["train", "--model", REPO, "-i", str(data_dir / "train.jsonl"), "--name", "hub",
                   "--set", "train.max_steps=1", "--set", "train.batch_size=2", "--set", "train.report_to=none",
                   "--set", "render.max_length=128"], hub_cache, tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    run_dir = tmp_path / "runs" / "hub"
    info = json.loads((run_dir / "run.json").read_text())
    assert info["base_model"] == f"{REPO}@{COMMIT}"
    assert info["base_model_path"] == str(hub_cache / f"models--{REPO.replace('/', '--')}" / "snapshots" / COMMIT)
    card = yaml.safe_load((run_dir / "README.md").read_text().split("---")[1])
    assert card["base_model"] == REPO
    adapter = json.loads((run_dir / "adapter_config.json").read_text())
    assert (adapter["base_model_name_or_path"], adapter["revision"]) == (REPO, COMMIT)


def test_pinned_revisions_and_a_missing_model_offline(hub_cache, tmp_path, monkeypatch):
    from huggingface_hub import constants

    from sftpipe.config import load_config
    from sftpipe.errors import ModelError
    from sftpipe.models import resolve_model

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    snapshot = hub_cache / f"models--{REPO.replace('/', '--')}" / "snapshots" / COMMIT
    assert resolve_model(REPO) == snapshot == resolve_model(f"{REPO}@{COMMIT}")
    assert resolve_model(load_config(overrides=[f"model.name={REPO}", "model.revision=main"]).model.name) == snapshot
    with pytest.raises(ModelError) as err:
        resolve_model("sftpipe-test/absent")
    text = str(err.value)
    assert "not in the hub cache" in text and str(hub_cache) in text and "hf download sftpipe-test/absent" in text
    assert "\n" not in text
    with pytest.raises(ModelError, match="v9"):
        resolve_model(f"{REPO}@v9")


def test_the_readme_quickstart_as_written(hub_cache, data_dir, tmp_path):
    """The README's quickstart block, its model id pointed at the test's cached hub model and my.jsonl at test data;
    default settings otherwise (~20 s)."""
    shutil.copy(data_dir / "train.jsonl", tmp_path / "my.jsonl")
    commands = [c.split() for c in readme_commands(block_after("quickstart"))]
    assert [c[:2] for c in commands] == [["sftpipe", "train"], ["sftpipe", "doctor"]]
    for command in commands:
        args = [REPO if a == "Qwen/Qwen2.5-0.5B-Instruct" else a for a in command[1:]]
        res = sftpipe(args, hub_cache, tmp_path)
        ok = (0, 1) if command[1] == "doctor" else (0,)  # doctor exits 1 while a check fails (a quick run has no eval)
        assert res.returncode in ok and "Traceback" not in res.stderr, (command, res.stdout[-2000:], res.stderr[-2000:])
    assert "doctor:" in res.stdout and "masks" in res.stdout  # it checked the run's own masks
    info = json.loads((tmp_path / "runs" / "mine" / "run.json").read_text())
    assert info["status"] == "complete" and info["base_model"] == f"{REPO}@{COMMIT}" and info["mode"] == "lora"
