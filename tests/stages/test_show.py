"""`show` prints what the CLI printed before it owned the presentation (the export line, JSON for --json)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sftpipe.stages import show
from sftpipe.stages.export import ExportResult


@pytest.mark.parametrize("record, source", [
    ({"run_dir": "runs/t", "checkpoint": None, "dtype": "fp16"}, "runs/t"),
    ({"run_dir": "runs/t", "checkpoint": "checkpoint-5", "dtype": "fp16"}, "runs/t/checkpoints/checkpoint-5"),
])
def test_export_line_names_the_run_or_checkpoint_given(capsys, record, source):
    show.print_export(ExportResult(Path("out/hf"), "gguf", record))
    assert capsys.readouterr().out == f"exported {source} as gguf (fp16) -> out/hf\n"


def test_review_stats_as_json(capsys):
    show.print_review_stats({"answers": 1}, as_json=True)
    assert json.loads(capsys.readouterr().out) == {"answers": 1}


def test_generated_files_show_a_count_only_where_there_is_one(capsys):
    from types import SimpleNamespace

    show.print_generated(SimpleNamespace(files={"raw": Path("a.jsonl"), "facts": Path("b.json")}, counts={"raw": 3}))
    assert capsys.readouterr().out == "a.jsonl  (3 lines)\nb.json\n"  # not "b.json  ( lines)"


def test_doctor_on_a_narrow_console_never_splits_a_key(monkeypatch):
    import io

    from rich.console import Console

    from sftpipe.doctor import Finding
    from sftpipe.stages.doctor import DoctorResult

    key = "curate.decontaminate.eval_files"
    result = DoctorResult([Finding("decontaminated", "WARN", f"{key} is empty, so nothing was checked against the "
                                   "held-out prompts", f"set {key}")], "sftpipe.yaml", None)
    for width, table in ((80, False), (160, True)):
        out = io.StringIO()
        monkeypatch.setattr(show, "console", Console(file=out, width=width, color_system=None))
        show.print_doctor(result)
        text = out.getvalue()
        assert ("│" in text) == table and "doctor: 0 pass, 1 warn" in text
        if not table:
            assert key in text.replace("\n", "") and f"fix: set {key}" in text
