"""`render` commits its outputs as a whole: proven first, moved into place with the marker last; a parity failure
or a crash leaves the previous outputs; the output can never be one of the inputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import sftpipe.stages.render as render_stage
from sftpipe.config import load_config
from sftpipe.errors import ConfigError, TemplateError

SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "support_sample.jsonl"


def cfg(path: Path):
    return load_config(overrides=[f"data.train={path}", "render.max_length=512"])


def outputs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_outputs_are_proven_then_moved_in_with_the_marker_last(tmp_path, monkeypatch):
    out = tmp_path / "rows.jsonl"
    render_stage.run(cfg(SAMPLE), out, progress=False)
    marker = json.loads((tmp_path / "rows.render.json").read_text())
    assert marker["stage"] == "render" and "rows.jsonl" in marker["files"]
    assert any(name.startswith("rows.tokenizer/") for name in marker["files"])
    before = outputs(tmp_path)

    def mismatch(tok_dir, examples, **kw):
        return {"examples_checked": len(examples), "text_mismatches": 1, "token_mismatches": 0, "examples": []}

    monkeypatch.setattr(render_stage, "check_parity", mismatch)
    half = tmp_path / "half.jsonl"
    shutil.copy(SAMPLE, half)
    with open(half, "a", encoding="utf-8") as f:  # a different input, so new rows would differ
        f.write(SAMPLE.read_text(encoding="utf-8").splitlines()[0] + "\n")
    with pytest.raises(TemplateError, match="nothing was written"):
        render_stage.run(cfg(half), out, progress=False)
    after = outputs(tmp_path)
    assert "rows.parity-failed.json" in after
    assert {k: v for k, v in after.items() if k not in ("rows.parity-failed.json", "half.jsonl")} == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left


def test_the_output_cannot_overwrite_an_input(tmp_path):
    data = tmp_path / "x.jsonl"
    shutil.copy(SAMPLE, data)
    with pytest.raises(ConfigError, match="is also an input"):
        render_stage.run(cfg(data), data, progress=False)
    assert data.read_bytes() == SAMPLE.read_bytes()


@pytest.mark.parametrize("family", ["deepseek-v3", "mistral-7b-instruct-v0.3", "nemotron-3-nano", "cohere2"])
def test_parity_holds_for_per_turn_serving_examples(tmp_path, family):
    template = Path(__file__).resolve().parents[1] / "assets" / "templates" / f"{family}.jinja"
    cfg = load_config(overrides=[f"data.train={SAMPLE}", "render.max_length=2048", f"template.name={template}"])
    result = render_stage.run(cfg, tmp_path / "rows.jsonl", progress=False)
    assert result.parity["examples_checked"] == result.mask.examples > 0
    assert result.parity["text_mismatches"] == 0 and result.parity["token_mismatches"] == 0
