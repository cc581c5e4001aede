"""`sftpipe doctor` on the tiny Harbor demo's output: the demo prints the doctor table at its end, and every
finding that is not PASS/SKIP is one this file explains."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from sftpipe.cli import app
from sftpipe.models import load_tokenizer, tiny_model
from sftpipe.stages import demo as demo_stage

# What the tiny demo is expected to be told, and why (anything else that warns or fails is a regression).
EXPLAINED_WARN = {
    "lora-first": "the demo fine-tunes all weights of a 135M model at lr 1e-4 (above the guide's 1e-5..2e-5 for "
                  "7B-13B models): measured to learn more per CPU-second than LoRA, as configs/harbor.yaml says",
}
EXPLAINED_FAIL = {
    "decontaminated": "the generator writes red-team and compliance prompts from the same customer phrasings as the "
                      "training tickets, and the demo decontaminates only against IFEval: some eval prompts "
                      "(e.g. CP0008) are verbatim training prompts",
}


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("demo-doctor")
    tok = load_tokenizer("smollm2-135m-instruct")
    tiny_model(tok).save_pretrained(root / "tiny-model")
    tok.save_pretrained(root / "tiny-model")
    console = Console(record=True, width=200, file=io.StringIO())
    result = demo_stage.run(root / "demo", size="tiny", sets=[f"model.name={root / 'tiny-model'}"], console=console)
    torch.set_num_threads(before)
    return result, console.export_text()


@pytest.mark.slow
def test_demo_prints_the_doctor_table_at_its_end(demo_out):
    _, printed = demo_out
    tail = printed[printed.index("base vs SFT"):]
    assert "doctor:" in tail and "template-parity" in tail and "held-out-split" in tail


@pytest.mark.slow
def test_doctor_on_the_demo_lists_only_explained_findings(demo_out, monkeypatch):
    result, _ = demo_out
    monkeypatch.chdir(result.out_dir)
    res = CliRunner().invoke(app, ["doctor", "-c", "sftpipe.yaml", "--json"])
    out = json.loads(res.output)
    found = {c["check"]: c for c in out["checks"]}
    assert out["run"] == str(Path("runs") / "harbor")
    warned = {k for k, c in found.items() if c["verdict"] == "WARN"}
    failed = {k for k, c in found.items() if c["verdict"] == "FAIL"}
    assert warned <= set(EXPLAINED_WARN), {k: found[k]["evidence"] for k in warned}
    assert failed <= set(EXPLAINED_FAIL), {k: found[k]["evidence"] for k in failed}
    assert res.exit_code == (1 if failed else 0)
    for name in ("template-parity", "end-of-turn", "masks", "curation-ran", "data-hash", "held-out-split",
                 "near-duplicates", "general-mix", "refusals", "provenance"):
        assert found[name]["verdict"] == "PASS", found[name]
