"""curate commits its out_dir as a whole: a failure mid-write leaves the previous complete output, readers refuse a
curated folder without a valid manifest, and out_dir never swallows inputs or foreign files."""

from __future__ import annotations

import json
import shutil

import pytest

import sftpipe.curated as curated
from sftpipe.config.curate import CurateConfig
from sftpipe.curate.pipeline import run_curate
from sftpipe.curated import MARKER, require_curated
from sftpipe.errors import ConfigError

from .test_curate_pipeline import RAW, config


def snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_a_failure_while_writing_leaves_the_previous_output_untouched(tmp_path, monkeypatch):
    out = tmp_path / "curated"
    first = run_curate([RAW], config(), out)
    before = snapshot(out)
    manifest = json.loads((out / MARKER).read_text())
    assert manifest["stage"] == "curate" and manifest["content_hashes"] == first.hashes
    assert set(manifest["files"]) == {"train.jsonl", "eval.jsonl", "rejected.jsonl", "report.json"}

    real = curated.write_json

    def crash(path, obj, **kw):  # train/eval/rejected are written; the report write dies
        raise OSError("disk full")

    monkeypatch.setattr(curated, "write_json", crash)
    with pytest.raises(OSError, match="disk full"):
        run_curate([RAW], config(split={"eval_ratio": 0.5}), out)
    monkeypatch.setattr(curated, "write_json", real)
    assert snapshot(out) == before
    # no staging folder left behind; the finished shard tasks stay in the work folder, for the rerun
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".curated.work-")) == ["curated"]
    require_curated(out / "train.jsonl")
    again = run_curate([RAW], config(split={"eval_ratio": 0.5}), out)
    assert again.counts["eval"] > first.counts["eval"]
    assert [p.name for p in tmp_path.iterdir()] == ["curated"]  # a finished run removes its work folder


def test_readers_refuse_a_curated_folder_without_a_valid_manifest(tmp_path):
    out = tmp_path / "curated"
    run_curate([RAW], config(), out)
    with open(out / "train.jsonl", "a", encoding="utf-8") as f:  # a half-replaced file
        f.write('{"messages": []}\n')
    with pytest.raises(ConfigError, match=r"no valid sftpipe_curate.json .*re-run `sftpipe curate`"):
        require_curated(out / "train.jsonl")
    (out / MARKER).unlink()
    with pytest.raises(ConfigError, match="re-run `sftpipe curate`"):
        require_curated(out / "train.jsonl")


def test_out_dir_never_replaces_inputs_or_foreign_files(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(RAW, data / "raw.jsonl")
    with pytest.raises(ConfigError, match="holds the input"):
        run_curate([data / "raw.jsonl"], config(), data)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    with pytest.raises(ConfigError, match="files that curate did not write"):
        run_curate([data / "raw.jsonl"], CurateConfig.model_validate({"workers": 1, "progress": False}),
                   tmp_path / "notes")
    assert (tmp_path / "notes" / "todo.txt").read_text() == "mine" and (data / "raw.jsonl").is_file()
