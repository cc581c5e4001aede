"""`sftpipe curate` end to end: the real CLI on the checked-in raw export, and the shipped Harbor config on
freshly generated demo data (every injected policy violation is dropped, nothing is lost)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sftpipe.config import load_config
from sftpipe.curated import content_hash
from sftpipe.demo import generate
from sftpipe.demo.policy import rules as demo_rules
from sftpipe.errors import ConfigError
from sftpipe.checks import load_rules
from sftpipe.stages.curate import run

ROOT = Path(__file__).resolve().parents[2]
ASSETS = ROOT / "tests" / "assets" / "curate"
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_cli_curates_the_raw_export(tmp_path):
    cfg = tmp_path / "sftpipe.yaml"
    cfg.write_text(yaml.safe_dump({"curate": {
        "filters": {"min_tokens": 20, "max_tokens": 300}, "split": {"eval_ratio": 0.25},
        "decontaminate": {"eval_sets": {"tiny": str(ASSETS / "eval_prompts.jsonl")}},
        "mix": {"enabled": True, "source": str(ASSETS / "general.jsonl"), "ratio": 0.2}}}))
    out = tmp_path / "curated"
    res = subprocess.run([sys.executable, "-m", "sftpipe.cli", "curate", "--config", cfg, "--input",
                          ASSETS / "raw.jsonl", "--out", out, "--set", "curate.tokenizer=chars",
                          "--set", "curate.progress=false"], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "COLUMNS": "200"})
    assert res.returncode == 0, res.stderr
    report = json.loads((out / "report.json").read_text())
    counts = report["counts"]
    n_in = sum(len((ASSETS / name).read_text().splitlines()) for name in ("raw.jsonl", "general.jsonl"))
    assert counts["in"] == n_in == counts["kept"] + counts["rejected"]
    assert counts["kept"] == len(read_jsonl(out / "train.jsonl")) + len(read_jsonl(out / "eval.jsonl")) > 0
    rejected = read_jsonl(out / "rejected.jsonl")
    assert counts["rejected"] == len(rejected) and all(r["stage"] and r["reason"] for r in rejected)
    for stage in report["stages"]:
        assert stage["in"] == stage["out"] + sum(stage["dropped"].values()), stage
    assert {"dedup/near_duplicate", "filters/wrong_language", "decontaminate/contaminated"} <= set(
        report["rejected_by_reason"])
    for name in ("train.jsonl", "eval.jsonl", "rejected.jsonl"):
        digest = content_hash(read_jsonl(out / name))
        assert report["hashes"][name] == digest and digest in res.stdout  # the summary prints every hash
    assert "near_duplicate: 1" in res.stdout and "policy" not in res.stdout  # policy is off by default


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configs_validate(path):
    data = yaml.safe_load(path.read_text())
    if isinstance(data, dict) and "rules" in data:
        assert load_rules(path)
    else:
        load_config(path)


RULE_FILES = [ROOT / "src" / "sftpipe" / "demo" / "assets" / "curate_rules.yaml"]


@pytest.mark.parametrize("path", RULE_FILES, ids=[p.name for p in RULE_FILES])
def test_harbor_rules_copy_the_demo_policy(path):
    rules = {r.id: r for r in load_rules(path)}
    demo = demo_rules()
    assert rules["instant_refund"].must_not_contain == [demo["global"]["must_not_contain"]["instant_refund"]]
    assert rules["fraud_warning_missing"].must_contain == [demo["phrases"]["fraud_warning"]]
    assert rules["fraud_warning_missing"].categories == [c for c, r in demo["categories"].items() if r["fraud_warning"]]
    assert rules["account_action_in_chat"].must_not_contain == [
        demo["categories"]["account_lockout"]["must_not_contain"]["account_action_in_chat"]]
    assert rules["incomplete_reply"].categories == list(demo["categories"])


def test_harbor_config_drops_every_injected_violation(tmp_path):
    gen = generate(tmp_path / "demo", size="tiny", seed=1)
    cfg = load_config(ROOT / "configs" / "harbor-curate.yaml", [
        f"curate.inputs={gen.files['export']}", f"curate.out_dir={tmp_path / 'out'}",
        f"curate.policy.rules={gen.files['curate_rules.yaml']}",
        f"curate.policy.json_schema={gen.files['refund_offer.schema.json']}",
        f"curate.mix.source={gen.files['general']}", "curate.workers=1", "curate.progress=false"])
    result = run(cfg)
    assert result.counts["in"] == result.counts["kept"] + result.counts["rejected"]
    dropped = {r["record"]["id"]: r["reason"] for r in read_jsonl(result.files["rejected.jsonl"])
               if isinstance(r["record"], dict) and "id" in r["record"]}
    policy_noise = {m["id"]: m["noise"] for m in read_jsonl(gen.files["noise_manifest"])
                    if any(x.startswith("policy_") for x in m["noise"])}
    assert len(policy_noise) >= 8
    assert {rid: dropped.get(rid) for rid in policy_noise} == {rid: dropped[rid] for rid in policy_noise}
    assert {"policy_violation", "fact_mismatch"} <= {dropped[rid] for rid in policy_noise}
    clean = [m["id"] for m in read_jsonl(gen.files["noise_manifest"]) if not m["noise"]]
    assert not [rid for rid in clean if dropped.get(rid, "").startswith(("policy", "schema", "fact"))]


def test_stage_needs_inputs(tmp_path):
    with pytest.raises(ConfigError, match="curate.inputs"):
        run(load_config(None, [f"curate.out_dir={tmp_path}"]))
    with pytest.raises(ConfigError, match="file not found"):
        run(load_config(None, [f"curate.inputs={tmp_path / 'nope.jsonl'}"]))
