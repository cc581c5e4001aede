"""The Harbor demo end to end through the real CLI (tiny size, tiny model), `sftpipe doctor` on what it built, and
the shipped configs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sftpipe.config import load_config
from sftpipe.demo.rules_report import eval_rules
from sftpipe.demo.summary import harbor_config_text, headline
from sftpipe.models import load_tokenizer, tiny_model

ROOT = Path(__file__).resolve().parents[2]
# What doctor is expected to tell the tiny demo, and why (anything else that warns or fails is a regression).
EXPLAINED_WARN = {
    "lora-first": "the demo fine-tunes all weights of a 135M model at lr 1e-4 (above the guide's 1e-5..2e-5 for "
                  "7B-13B models): measured to learn more per CPU-second than LoRA, as configs/harbor.yaml says",
    "decontaminated": "the generator writes eval prompts from the same customer sentences as the training tickets, "
                      "so some share a phrase (a word 8-gram) with a training prompt; none is a copy (< 50% of its "
                      "n-grams, tests/demo/test_generate.py checks it at the default size)",
}
EXPLAINED_FAIL: dict[str, str] = {}


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_validates(path):
    if path.name.endswith("rules.yaml"):
        pytest.skip("a rules file, not a project config")
    cfg = load_config(path)
    assert cfg.name


def test_repo_config_is_the_packaged_demo_config():
    assert (ROOT / "configs" / "harbor.yaml").read_text() == harbor_config_text()


def test_guide_recipe_config_matches_the_guide():
    cfg = load_config(ROOT / "configs" / "harbor-mistral7b-qlora.yaml")
    assert (cfg.train.mode, cfg.lora.quant_type, cfg.lora.r, cfg.train.epochs, cfg.train.lr) == ("qlora", "nf4", 32,
                                                                                                    1, 2e-4)
    assert cfg.render.max_length == 4096 and cfg.curate.split.eval_ratio == 0.08 and cfg.curate.split.by == "category"
    assert set(cfg.lora.target_modules) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                            "down_proj"}


@pytest.mark.slow
def test_tiny_demo_runs_end_to_end_through_the_cli(tmp_path):
    tok = load_tokenizer("smollm2-135m-instruct")
    model_dir = tmp_path / "tiny-model"
    tiny_model(tok).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    out = tmp_path / "demo"
    res = subprocess.run([sys.executable, "-m", "sftpipe.cli", "demo", "--size", "tiny", "--out", str(out),
                          "--set", f"model.name={model_dir}"], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "base vs SFT" in res.stdout and "report.html" in res.stdout
    assert not re.search(r"\w+\.py:\d+", res.stdout)  # eval's lines are plain `[eval] ...`, no source locations
    assert "[eval] final: generating" in res.stderr
    report = json.loads((out / "curated" / "report.json").read_text())
    assert report["counts"]["in"] == report["counts"]["kept"] + report["counts"]["rejected"]
    run = json.loads((out / "runs" / "harbor" / "run.json").read_text())
    assert run["mode"] == "full" and run["data"]["train_hash"]
    metrics = json.loads((out / "runs" / "harbor" / "eval" / "metrics.json").read_text())
    summary = headline(metrics, eval_rules(out / "runs" / "harbor" / "eval", out))
    assert summary["base"]["held-out loss"] is not None and summary["sft"]["held-out loss"] is not None
    assert summary["sft"]["shape-rule violation rate"] is not None
    assert (out / "runs" / "harbor" / "eval" / "report.html").stat().st_size > 0
    written = json.loads((out / "summary.json").read_text())
    assert written["sft"] == summary["sft"] and written["met"]["held-out loss"] in (True, False)
    curated = [json.loads(x) for x in (out / "curated" / "train.jsonl").read_text().splitlines()]
    assert written["examples_seen"] == run["examples_seen"] and set(run["examples_seen"]) - {"(none)"} <= {
        r["category"] for r in curated} and sum(run["examples_seen"].values()) >= run["config"]["train"]["max_steps"]
    decisions = [k for k in written["sft"] if k.startswith("decision: ")]  # one row per threshold rule, vs majority
    assert len(decisions) >= 5 and all(written["targets"][k].startswith("> majority ") for k in decisions)
    assert written["targets"]["shape-rule violation rate"] == "<= base / 5" and "shape-rule" in res.stdout
    assert written["targets"]["IFEval prompt-level strict"] == "delta reported" and set(written["rules"]) == {
        "base", "sft", "dpo"}
    # the DPO stage: SFT -> DPO (reference = the SFT run) -> eval vs base, base / SFT / DPO side by side
    dpo = json.loads((out / "runs" / "harbor-dpo" / "run.json").read_text())
    assert dpo["kind"] == "dpo" and dpo["status"] == "complete" and dpo["reference"]["name"] == "harbor"
    assert (out / "runs" / "harbor-dpo" / "eval" / "metrics.json").is_file()
    table = written["dpo"]["table"]
    assert set(table) == {"base", "sft", "dpo"} and table["sft"] == {**table["sft"], **{
        k: v for k, v in summary["sft"].items() if k in table["sft"]}}
    assert all(table[m]["mean reply tokens"] is not None for m in table) and "base vs SFT vs DPO" in res.stdout
    assert all(table[m]["held-out loss"] is not None for m in table)  # the report's DPO column showed "–"
    page = (out / "report.html").read_text()  # the demo's own page: base, SFT and DPO side by side
    assert written["run_dir"] == "runs/harbor" and "demo report" in res.stdout
    assert all(label in page for label in ("base", "SFT", "DPO", "shape-rule violation rate", "<svg"))
    # doctor: the demo prints its table last, and every finding that is not PASS/SKIP is explained above
    tail = res.stdout[res.stdout.index("base vs SFT"):]
    assert "doctor:" in tail and "template-parity" in tail and "held-out-split" in tail
    doc = subprocess.run([sys.executable, "-m", "sftpipe.cli", "doctor", "-c", "sftpipe.yaml", "--json"], cwd=out,
                         capture_output=True, text=True, timeout=300)
    found = {c["check"]: c for c in json.loads(doc.stdout)["checks"]}
    assert json.loads(doc.stdout)["run"] == str(Path("runs") / "harbor")
    warned = {k for k, c in found.items() if c["verdict"] == "WARN"}
    failed = {k for k, c in found.items() if c["verdict"] == "FAIL"}
    assert warned <= set(EXPLAINED_WARN), {k: found[k]["evidence"] for k in warned}
    assert failed <= set(EXPLAINED_FAIL), {k: found[k]["evidence"] for k in failed}
    assert doc.returncode == (1 if failed else 0)
    for name in ("template-parity", "end-of-turn", "masks", "curation-ran", "data-hash", "held-out-split",
                 "near-duplicates", "general-mix", "refusals", "provenance"):
        assert found[name]["verdict"] == "PASS", found[name]


def test_bars_are_judged_from_the_numbers():
    from sftpipe.demo.summary import verdicts

    good = {"base": {"refund JSON schema-valid": 0.0, "policy violation rate": 0.9, "boilerplate opener rate": 0.3,
                     "held-out loss": 2.5, "shape-rule violation rate": 0.8, "decision: x": 0.5},
            "sft": {"refund JSON schema-valid": 0.95, "policy violation rate": 0.1, "boilerplate opener rate": 0.0,
                    "held-out loss": 1.2, "shape-rule violation rate": 0.1, "decision: x": 0.8},
            "majority": {"decision: x": 0.75}}
    assert set(verdicts(good).values()) == {True}
    bad = {"base": good["base"], "majority": good["majority"],
           "sft": {**good["sft"], "refund JSON schema-valid": 0.89, "policy violation rate": 0.19,
                   "boilerplate opener rate": 0.01, "shape-rule violation rate": 0.17, "decision: x": 0.75}}
    assert verdicts(bad) == {"refund JSON schema-valid": False, "policy violation rate": False,
                             "boilerplate opener rate": False, "held-out loss": True,
                             "shape-rule violation rate": False, "decision: x": False}
    assert verdicts({"base": {}, "sft": {}})["held-out loss"] is None


@pytest.mark.parametrize("name", ["sftpipe.demo.summary", "sftpipe.demo.policy"])
def test_doctests(name):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(name))
    assert result.failed == 0 and result.attempted > 0
