"""Plan checks (config-level): one test per verdict reason, on a small hand-made project."""

from __future__ import annotations

import json

import pytest

from sftpipe.doctor import checks_plan
from sftpipe.io import write_json
from sftpipe.parity import save_tokenizer


def test_target_behaviours_pass_when_eval_names_checks(project):
    f = project.check("target-behaviours")
    assert f.verdict == "PASS" and "schema (heldout)" in f.evidence


def test_target_behaviours_fail_when_eval_names_no_check(project):
    project.config["eval"] = {"sets": [{"name": "heldout", "path": "curated/eval.jsonl"}]}
    project.write()
    f = project.check("target-behaviours")
    assert f.verdict == "FAIL" and "names no behaviour checks" in f.evidence and "eval.rules" in f.fix


def test_target_behaviours_warn_when_defined_after_training(project):
    checks = project.config["eval"]
    project.config["eval"] = {"sets": [{"name": "heldout", "path": "curated/eval.jsonl"}]}
    project.write()
    run = project.run()
    project.config["eval"] = checks
    project.write()
    f = project.check("target-behaviours", run)
    assert f.verdict == "WARN" and "defined after training" in f.evidence


def test_base_checkpoint_pass_instruct_with_small_budget(project):
    f = project.check("base-checkpoint")
    assert f.verdict == "PASS" and "instruct" in f.evidence and "40 demonstrations" in f.evidence


def test_base_checkpoint_warn_raw_base_with_small_budget(project, tok):
    base = project.root / "tiny-base"
    save_tokenizer(tok, base)
    cfg = json.loads((base / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    write_json(base / "tokenizer_config.json", cfg)
    write_json(base / "config.json", {"_name_or_path": "org/tiny-base", "model_type": "llama"})
    project.config["model"] = str(base)
    project.write()
    f = project.check("base-checkpoint")
    assert f.verdict == "WARN" and "raw base" in f.evidence and "instruct variant" in f.fix


def test_base_checkpoint_warn_instruct_with_large_budget(project, monkeypatch):
    monkeypatch.setattr(checks_plan, "LARGE_BUDGET", 30)
    f = project.check("base-checkpoint")
    assert f.verdict == "WARN" and "> 30" in f.evidence


def test_multi_turn_policy_pass_when_set_explicitly(project):
    f = project.check("multi-turn-policy")
    assert f.verdict == "PASS" and "8/40" in f.evidence and "set in sftpipe.yaml" in f.evidence


def test_multi_turn_policy_warn_when_left_default_on_multi_turn_data(project):
    del project.config["render"]["train_on"]
    project.write()
    f = project.check("multi-turn-policy")
    assert f.verdict == "WARN" and "default" in f.evidence and "all_assistant" in f.fix


def test_multi_turn_policy_warn_when_config_differs_from_run(project):
    run = project.run()
    project.config["render"]["train_on"] = "last_assistant"
    project.write()
    f = project.check("multi-turn-policy", run)
    assert f.verdict == "WARN" and "the run trained with train_on=all_assistant" in f.evidence


def test_lora_first_pass_inside_the_guide_ranges(project):
    f = project.check("lora-first")
    assert f.verdict == "PASS" and "rank 16, alpha 32" in f.evidence


@pytest.mark.parametrize("section, key, value, expect", [
    ("train", "lr", 1e-3, "lr 0.001 outside"),
    ("lora", "r", 8, "rank 8 outside"),
    ("lora", "alpha", 64, "alpha 64 = 4x rank"),
    ("train", "warmup_ratio", 0.0, "warmup_ratio 0 outside"),
], ids=["lr", "rank", "alpha", "warmup"])
def test_lora_first_warn_outside_a_range(project, section, key, value, expect):
    project.config[section][key] = value
    project.write()
    f = project.check("lora-first")
    assert f.verdict == "WARN" and expect in f.evidence and "guide" in f.fix + f.guide


def test_lora_first_warn_on_full_fine_tune(project):
    project.config["train"].update(mode="full", lr=2e-5)
    project.write()
    f = project.check("lora-first")
    assert f.verdict == "WARN" and "train.mode=full" in f.evidence and "plateau" in f.fix


def test_system_prompt_pass_short_and_stable(project):
    f = project.check("system-prompt")
    assert f.verdict == "PASS" and "1 distinct" in f.evidence and "sha256" in f.evidence


def test_system_prompt_warn_over_400_tokens(project):
    long = "You are Harbor Support's assistant. " + "Always follow the refund policy carefully. " * 80
    for r in project.train:
        r["messages"][0]["content"] = long
    project.write()
    f = project.check("system-prompt")
    assert f.verdict == "WARN" and "(> 400)" in f.evidence


def test_system_prompt_warn_when_unstable(project):
    project.train[3]["messages"][0]["content"] = "You are a pirate."
    project.write()
    f = project.check("system-prompt")
    assert f.verdict == "WARN" and "2 distinct system prompts" in f.evidence and "T0003" in f.evidence


def test_general_mix_pass_between_10_and_30_percent(project):
    f = project.check("general-mix")
    assert f.verdict == "PASS" and "6/40" in f.evidence


def test_general_mix_warn_when_none(project):
    for r in project.train:
        r.pop("mix", None)
    project.write()
    f = project.check("general-mix")
    assert f.verdict == "WARN" and "0/40" in f.evidence and "curate.mix" in f.fix


def test_general_mix_warn_when_too_much(project):
    for r in project.train[:20]:
        r["mix"] = "general"
    project.write()
    f = project.check("general-mix")
    assert f.verdict == "WARN" and "outside 10%-30%" in f.evidence


def test_refusals_pass_when_refusals_are_trained(project):
    f = project.check("refusals")
    assert f.verdict == "PASS" and "redteam" in f.evidence and "T0000" in f.evidence


def test_refusals_warn_when_none_in_training_data(project):
    for r in project.train:
        r["messages"][2]["content"] = "Done, all sorted."
    project.write()
    f = project.check("refusals")
    assert f.verdict == "WARN" and "0/48" in f.evidence and "refusal demonstrations" in f.fix


def test_refusals_skip_without_refusal_behaviours(project):
    project.config["eval"]["sets"] = project.config["eval"]["sets"][:1]
    project.write()
    f = project.check("refusals")
    assert f.verdict == "SKIP" and "no refusal behaviour" in f.evidence


def test_synthetic_audited_pass_without_synthetic_records(project):
    assert project.check("synthetic-audited").verdict == "PASS"


def test_synthetic_audited_warn_without_judge_or_human_review(project):
    for r in project.train[10:20]:
        r["source"] = "synthetic"
    project.write()
    f = project.check("synthetic-audited")
    assert f.verdict == "WARN" and "10/40" in f.evidence and "T0010" in f.evidence and "judge" in f.fix


def test_synthetic_audited_pass_with_a_judge_filter(project):
    for r in project.train[10:20]:
        r["synthetic"] = True
    project.write()
    project.report["config"]["quality"]["judge"]["enabled"] = True
    project.save_report()
    f = project.check("synthetic-audited")
    assert f.verdict == "PASS" and "judge filter" in f.evidence


def test_doctests():
    import doctest

    from sftpipe.doctor import base, text

    for mod in (base, text, checks_plan):
        result = doctest.testmod(mod)
        assert result.failed == 0 and result.attempted > 0, mod.__name__


def test_synthetic_audited_pass_with_human_ratings(project):
    for r in project.train[:5]:
        r["origin"] = "teacher"
    (project.root / "ratings.csv").write_text("prompt_id,checkpoint,tone,policy,correctness\n")
    project.config["eval"]["human"] = "ratings.csv"
    project.write()
    f = project.check("synthetic-audited")
    assert f.verdict == "PASS" and "human ratings" in f.evidence


def test_base_checkpoint_skip_without_training_data(project):
    project.config["data"]["train"] = ["curated/none.jsonl"]
    project.write()
    assert project.check("base-checkpoint").verdict == "SKIP"
