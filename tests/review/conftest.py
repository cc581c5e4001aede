"""Two committed, evaluated runs with distinctive names, and a review session built from them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sftpipe.config import SftpipeConfig
from sftpipe.runs import RunFolder, RunInfo, TemplateInfo
from sftpipe.stages import review

RUN_A, RUN_B = "zanzibar-sft-7q", "quokka-dpo-9z"  # must never appear in served HTML
XSS = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2"> **bold** <b>b</b>'
CATEGORIES = ["refund"] * 6 + ["shipping"] * 4 + ["fraud"] * 2


def make_run(runs: Path, name: str, replies: list[str], sets=("support",)) -> Path:
    folder, _ = RunFolder.begin(runs, name)
    folder.prepare()
    (folder.path / "adapter_model.safetensors").write_text(name)
    folder.write_info(RunInfo(config={"name": name}, base_model="tiny-base", mode="lora", status="complete",
                              template=TemplateInfo(name="t", sha256="0" * 64)))
    run_dir = folder.commit("sft")
    gen = run_dir / "eval" / "generations" / "final"
    gen.mkdir(parents=True)
    for s in sets:
        rows = [{"id": f"{s}-{i}", "category": cat, "prompt": [{"role": "user", "content": f"Question {i} ({cat})"}],
                 "reference": None, "output": replies[i], "new_tokens": 5, "finish": "stop"}
                for i, cat in enumerate(CATEGORIES)]
        (gen / f"{s}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run_dir


@pytest.fixture
def runs(tmp_path) -> Path:
    root = tmp_path / "runs"
    make_run(root, RUN_A, [f"Reply from the first model to {i}." if i else XSS for i in range(len(CATEGORIES))])
    make_run(root, RUN_B, [f"Second model answers {i}." for i in range(len(CATEGORIES))])
    return root


def config(runs: Path, **review_cfg) -> SftpipeConfig:
    return SftpipeConfig.model_validate({"train": {"output_dir": str(runs)}, "review": review_cfg})


@pytest.fixture
def session(runs, tmp_path) -> Path:
    return review.init(config(runs, repeats=2), RUN_A, RUN_B, out=tmp_path / "s.sqlite").session
