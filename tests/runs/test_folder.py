"""The run folder contract: plain names only, replace-on-commit, marker-last completion, versioned run.json."""

from __future__ import annotations

import json

import pytest

from sftpipe.errors import ConfigError, ModelError
from sftpipe.runs import RunFolder, RunInfo, TemplateInfo, check_name, read_info, require_complete, write_info
from sftpipe.runs.checkpoints import is_complete, latest_checkpoint, write_marker
from sftpipe.runs.folder import RUN_MARKER


def info(**kw) -> RunInfo:
    return RunInfo(config={"name": "r", "render": {"max_length": 64}}, base_model="b", mode="lora",
                   template=TemplateInfo(name="t", sha256="0" * 64), **kw)


def finished(runs, name: str, text: str, **begin) -> RunFolder:
    folder, _ = RunFolder.begin(runs, name, **begin)
    folder.prepare()
    (folder.path / "adapter_model.safetensors").write_text(text)
    folder.write_info(info(status="complete"))
    folder.commit("sft")
    return folder


@pytest.mark.parametrize("name", ["../../somewhere", "/etc", "a/b", "..", ".hidden", "", "x" * 129, "a b", "é"])
def test_a_run_name_is_a_plain_name_never_a_path(tmp_path, name):
    with pytest.raises(ConfigError, match="not a plain run name"):
        RunFolder.begin(tmp_path / "runs", name, overwrite=True)
    assert check_name("harbor-sft_v1.2") == "harbor-sft_v1.2"


def test_overwrite_replaces_the_old_run_only_when_the_new_one_commits(tmp_path):
    runs = tmp_path / "runs"
    finished(runs, "r", "old")
    with pytest.raises(ConfigError, match="exists"):
        RunFolder.begin(runs, "r")
    folder, _ = RunFolder.begin(runs, "r", overwrite=True)
    folder.prepare()
    (folder.path / "adapter_model.safetensors").write_text("new, half written")
    # a crash here (no commit): the old run is untouched and still complete
    assert (runs / "r" / "adapter_model.safetensors").read_text() == "old"
    require_complete(runs / "r")
    finished(runs, "r", "new", overwrite=True)
    assert (runs / "r" / "adapter_model.safetensors").read_text() == "new"
    assert sorted(p.name for p in runs.iterdir()) == ["r"]  # no .next / .old left behind


def test_a_crash_between_the_two_renames_of_a_commit_is_repaired(tmp_path):
    runs = tmp_path / "runs"
    finished(runs, "r", "old")
    (runs / "r").rename(runs / ".r.old")  # the state after the first rename of a commit
    folder, _ = RunFolder.begin(runs, "r", overwrite=True)
    folder.prepare()
    assert (runs / "r" / "adapter_model.safetensors").read_text() == "old"


def test_readers_refuse_a_run_without_a_valid_marker_and_name_the_stage(tmp_path):
    runs = tmp_path / "runs"
    folder, _ = RunFolder.begin(runs, "r")
    folder.prepare()
    (folder.path / "adapter_model.safetensors").write_text("weights")
    folder.write_info(info())
    with pytest.raises(ModelError, match=r"not a complete run .*sftpipe train --resume"):
        require_complete(folder.path)
    folder.commit("sft")
    assert require_complete(folder.path).mode == "lora"
    assert json.loads((folder.path / RUN_MARKER).read_text())["files"]["adapter_model.safetensors"]["sha256"]
    (folder.path / "adapter_model.safetensors").write_text("weights changed afterwards")
    with pytest.raises(ModelError, match="not a complete run"):
        require_complete(folder.path)


def test_run_json_is_versioned_and_a_wave_1_file_still_loads(tmp_path):
    write_info(tmp_path, info())
    data = json.loads((tmp_path / "run.json").read_text())
    assert data["schema_version"] == 1 and data["kind"] == "sft"
    old = {k: v for k, v in data.items() if k not in ("schema_version", "kind", "status")}
    (tmp_path / "run.json").write_text(json.dumps({**old, "status": "complete"}))
    loaded = require_complete(tmp_path)  # no marker: the wave-1 run was complete by its own status
    assert loaded.schema_version == 1 and loaded.kind == "sft" and loaded.template.name == "t"
    (tmp_path / "run.json").write_text(json.dumps({**data, "schema_version": 99}))
    with pytest.raises(ModelError, match="newer than this sftpipe reads.*fix: upgrade"):
        read_info(tmp_path)
    (tmp_path / "run.json").write_text(json.dumps({"config": {}}))
    with pytest.raises(ModelError, match=r"not a valid run.json \(base_model: Field required.*fix: re-run"):
        read_info(tmp_path)


def test_checkpoint_markers_record_sha256_and_resume_skips_a_changed_checkpoint(tmp_path):
    for step in (5, 10):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "adapter_model.safetensors").write_text(f"step {step}")
        write_marker(folder, step)
    assert latest_checkpoint(tmp_path, verify=True).name == "checkpoint-10"
    (tmp_path / "checkpoint-10" / "adapter_model.safetensors").write_text("step 99")  # same size, other bytes
    assert is_complete(tmp_path / "checkpoint-10")  # sizes still match
    assert latest_checkpoint(tmp_path, verify=True).name == "checkpoint-5"


def test_train_refuses_a_path_as_run_name_before_touching_anything(tmp_path):
    import subprocess
    import sys

    victim = tmp_path / "somewhere"
    victim.mkdir()
    (victim / "precious.txt").write_text("keep me")
    out = subprocess.run([sys.executable, "-m", "sftpipe.cli", "train", "--name", "../somewhere", "--input",
                          str(tmp_path / "missing.jsonl"), "--set", f"train.output_dir={tmp_path / 'runs'}",
                          "--set", "train.overwrite=true"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "not a plain run name" in out.stderr
    assert "Traceback" not in out.stderr
    assert (victim / "precious.txt").read_text() == "keep me"
