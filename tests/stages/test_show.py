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
