"""The doctor stage and verb: registry contract, exit codes (--strict), --json, the table; on hand-made projects."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from typer.testing import CliRunner

from sftpipe.cli import app
from sftpipe.config import load_config
from sftpipe.errors import ConfigError
from sftpipe.doctor import CHECKS
from sftpipe.stages import doctor as doctor_stage
from sftpipe.stages.show_tables import doctor_table

ISSUE_CHECKS = {"target-behaviours", "base-checkpoint", "template-parity", "end-of-turn", "bos-once", "masks",
                "multi-turn-policy", "curation-ran", "data-hash", "near-duplicates", "decontaminated",
                "held-out-split", "lora-first", "overfitting", "general-mix", "refusals", "provenance",
                "regression-tested", "synthetic-audited", "system-prompt", "dpo-planned", "serving",
                "shared-run-folder"}


def test_every_check_is_registered_once_with_its_guide_line(project):
    findings = doctor_stage.run(project.cfg()).findings
    assert {f.check for f in findings} == ISSUE_CHECKS == {c.name for c in CHECKS}
    for c in CHECKS:
        assert c.guide.split(":")[0] in ("Checklist", "Pitfall", "Quality filter", "Guide"), c.name
        assert '"' in c.guide, f"{c.name}: the docstring must quote the guide line"


def _invoke(*args):
    return CliRunner().invoke(app, ["doctor", "-c", "sftpipe.yaml", *args])


def test_cli_exit_0_when_nothing_fails_and_json_lists_every_check(project):
    project.run()
    res = _invoke("--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["run"] == str(Path("runs") / "t") and out["counts"]["FAIL"] == 0 and out["exit_code"] == 0
    assert {c["check"] for c in out["checks"]} == ISSUE_CHECKS
    assert all(set(c) == {"check", "verdict", "evidence", "fix", "guide"} for c in out["checks"])


def test_cli_strict_fails_on_a_warning(project):
    project.config["train"]["lr"] = 1e-3
    project.write()
    assert _invoke("--check", "lora-first").exit_code == 0
    res = _invoke("--check", "lora-first", "--strict", "--json")
    assert res.exit_code == 1 and json.loads(res.output)["counts"]["WARN"] == 1


def test_cli_exit_1_on_a_failure_and_the_table_names_it(project):
    (project.root / "curated" / "report.json").unlink()
    res = _invoke("--check", "curation-ran", "--check", "general-mix")
    assert res.exit_code == 1
    assert "curation-ran" in res.output and "FAIL" in res.output and "sftpipe curate" in res.output


def test_cli_unknown_check_is_a_one_line_error(project):
    res = _invoke("--check", "no-such-check")
    assert res.exit_code != 0 and "unknown doctor check" in str(res.exception or res.output)


def test_table_has_a_row_per_check(project):
    result = doctor_stage.run(load_config(Path("sftpipe.yaml")), config_path=Path("sftpipe.yaml"))
    console = Console(record=True, width=200)
    console.print(doctor_table(result))
    text = console.export_text()
    assert all(name in text for name in ISSUE_CHECKS)
    assert f"{result.counts['PASS']} pass" in text and "SKIP" in text


def test_a_crashing_check_is_a_fail_row_not_a_crash(project):
    from sftpipe.doctor import Context
    from sftpipe.doctor.base import Check, run_check

    f = run_check(Check("boom", "Guide: \"x\"", lambda ctx: 1 / 0), Context(project.cfg()))
    assert f.verdict == "FAIL" and "crashed: ZeroDivisionError" in f.evidence and "doctor bug" in f.fix


def test_a_run_folder_that_is_not_there_is_an_error_not_five_skips(project):
    res = _invoke("--run", "runs/nope")
    assert isinstance(res.exception, ConfigError), res.output  # the CLI's main prints it as one line, exit 2
    assert str(res.exception).startswith("--run: runs/nope is not a run folder (it holds no run.json); fix:")
