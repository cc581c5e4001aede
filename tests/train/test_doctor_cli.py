"""`sftpipe doctor` through the CLI on a real tiny run (trained here with the training fixtures)."""

from __future__ import annotations

import json

import yaml
from typer.testing import CliRunner

from sftpipe.cli import app
from sftpipe.stages import train as train_stage

RUN_CHECKS = ["template-parity", "end-of-turn", "bos-once", "masks", "provenance"]


def test_doctor_cli_on_a_real_tiny_run(make_cfg, tmp_path, monkeypatch):
    cfg = make_cfg(eval=True)
    run_dir = train_stage.run(cfg, progress=False).run_dir
    (tmp_path / "sftpipe.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json")), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    doctor = lambda *args: CliRunner().invoke(app, ["doctor", "-c", "sftpipe.yaml", "--run", str(run_dir), *args])

    every = doctor("--json")
    out = json.loads(every.output)
    verdicts = {c["check"]: c["verdict"] for c in out["checks"]}
    assert every.exit_code == 1 and out["exit_code"] == 1
    assert verdicts["curation-ran"] == "FAIL"  # the fixture data never went through `sftpipe curate`
    assert all(verdicts[name] == "PASS" for name in RUN_CHECKS[:4]), verdicts
    assert verdicts["provenance"] == "WARN"  # trained, not evaluated
    assert verdicts["serving"] == "SKIP" and verdicts["dpo-planned"] == "SKIP"

    subset = [arg for name in RUN_CHECKS for arg in ("--check", name)]
    assert doctor(*subset).exit_code == 0
    strict = doctor(*subset, "--strict", "--json")
    assert strict.exit_code == 1 and json.loads(strict.output)["counts"] == {"PASS": 4, "WARN": 1, "FAIL": 0,
                                                                             "SKIP": 0}
