"""Run checks (run folders written through sftpipe.runs, no training): one test per reason."""

from __future__ import annotations

import json
import shutil

import pytest

from sftpipe.io import write_json
from sftpipe.models import load_tokenizer
from sftpipe.parity import save_tokenizer
from sftpipe.render import Example
from sftpipe.runs import RunInfo, write_info

RUN_CHECKS = ("template-parity", "end-of-turn", "provenance", "regression-tested", "serving")


@pytest.mark.parametrize("name", RUN_CHECKS)
def test_run_checks_skip_with_a_reason_without_a_run(project, name):
    f = project.check(name)
    assert f.verdict == "SKIP" and "no run folder" in f.evidence and "--run" in f.evidence


def test_template_parity_pass(project):
    f = project.check("template-parity", project.run())
    assert f.verdict == "PASS" and "0 mismatches" in f.evidence and "config (model)" in f.evidence


def test_template_parity_fail_without_parity_json(project):
    run = project.run()
    (run / "parity.json").unlink()
    assert "parity.json is missing" in project.check("template-parity", run).evidence


def test_template_parity_fail_on_mismatches(project):
    run = project.run()
    p = json.loads((run / "parity.json").read_text())
    write_json(run / "parity.json", {**p, "text_mismatches": 2, "first_mismatch": {"meta": {"id": "T0004"}}})
    f = project.check("template-parity", run)
    assert f.verdict == "FAIL" and "2 text / 0 token mismatches" in f.evidence and "T0004" in f.evidence


def test_template_parity_fail_when_saved_tokenizer_template_differs(project):
    run = project.run()
    cfg = json.loads((run / "tokenizer_config.json").read_text())
    cfg["chat_template"] = cfg["chat_template"].replace("<|im_end|>", "<|endoftext|>")
    write_json(run / "tokenizer_config.json", cfg)
    f = project.check("template-parity", run)
    assert f.verdict == "FAIL" and "tokenizer_config.json" in f.evidence.split("differs")[1]


def test_template_parity_fail_when_config_now_names_another_template(project):
    run = project.run()
    project.config["template"] = "chatml"
    project.write()
    f = project.check("template-parity", run)
    assert f.verdict == "FAIL" and "config (chatml)" in f.evidence


def test_end_of_turn_pass(project):
    f = project.check("end-of-turn", project.run())
    assert f.verdict == "PASS" and "<|im_end|>" in f.evidence and "48/48" in f.evidence


def test_end_of_turn_fail_when_generation_config_lacks_it(project):
    run = project.run()
    write_json(run / "generation_config.json", {"eos_token_id": 0})
    f = project.check("end-of-turn", run)
    assert f.verdict == "FAIL" and "eos_token_id lacks" in f.evidence


def test_end_of_turn_warn_when_truncation_drops_it(project):
    run = project.run()
    info = RunInfo.model_validate(json.loads((run / "run.json").read_text()))
    info.mask_report = {**info.mask_report, "eot_trained": 45, "truncation_policy": "truncate"}
    write_info(run, info)
    f = project.check("end-of-turn", run)
    assert f.verdict == "WARN" and "3 trained replies lost" in f.evidence


def test_bos_once_pass(project):
    f = project.check("bos-once", project.run())
    assert f.verdict == "PASS" and "1 from the template" in f.evidence


def test_bos_once_warn_when_tokenizer_adds_a_second(project):
    run = project.run()
    fresh = load_tokenizer("smollm2-135m-instruct")
    fresh.add_bos_token = True  # the template already writes BOS (<|im_start|> on SmolLM2)
    save_tokenizer(fresh, run)
    f = project.check("bos-once", run)
    assert f.verdict == "WARN" and "doubles BOS" in f.evidence and "add_special_tokens=False" in f.fix


def test_bos_once_fail_when_template_writes_two(project):
    run = project.run()
    cfg = json.loads((run / "tokenizer_config.json").read_text())
    cfg["chat_template"] = "{{ bos_token }}" + cfg["chat_template"]
    write_json(run / "tokenizer_config.json", cfg)
    f = project.check("bos-once", run)
    assert f.verdict == "FAIL" and "renders 2 BOS" in f.evidence


def test_masks_pass(project):
    f = project.check("masks", project.run())
    assert f.verdict == "PASS" and "40 sampled examples" in f.evidence and "trained share 45.0%" in f.evidence


def _rendered_with(labels_of):
    """A build_examples stand-in whose labels come from `labels_of(example)` (a broken renderer)."""
    from sftpipe import dataset

    real = dataset.build_examples

    def broken(*args, **kwargs):
        examples, rejects, report = real(*args, **kwargs)
        return [Example(e.input_ids, labels_of(e), e.text, e.messages, e.meta) for e in examples], rejects, report
    return broken


def test_masks_fail_when_user_tokens_are_trained(project, monkeypatch):
    from sftpipe import dataset

    monkeypatch.setattr(dataset, "build_examples", _rendered_with(lambda e: list(e.input_ids)))
    f = project.check("masks")
    assert f.verdict == "FAIL" and "non-assistant text is trained" in f.evidence and "(system)" in f.evidence


def test_masks_fail_when_an_example_trains_nothing(project, monkeypatch):
    from sftpipe import dataset

    monkeypatch.setattr(dataset, "build_examples", _rendered_with(lambda e: [-100] * len(e.input_ids)))
    f = project.check("masks")
    assert f.verdict == "FAIL" and "train nothing" in f.evidence


@pytest.mark.parametrize("field, value, expect", [
    ("trained_share", 0.99, "trained share 99.0% outside"),
    ("truncated", 10, "25.0% of examples truncated"),
], ids=["share", "truncation"])
def test_masks_warn_out_of_bounds(project, field, value, expect):
    run = project.run()
    info = RunInfo.model_validate(json.loads((run / "run.json").read_text()))
    info.mask_report = {**info.mask_report, field: value}
    write_info(run, info)
    f = project.check("masks", run)
    assert f.verdict == "WARN" and expect in f.evidence


def test_overfitting_pass(project):
    f = project.check("overfitting", project.run())
    assert f.verdict == "PASS" and "1 epochs" in f.evidence and "best 1.7000" in f.evidence


def test_overfitting_warn_when_eval_loss_rises_while_train_loss_falls(project):
    metrics = [*({"loss": 2.0 - 0.2 * i, "step": i + 1, "epoch": 0.1 * (i + 1)} for i in range(9)),
               {"eval_loss": 1.5, "step": 3}, {"eval_loss": 1.4, "step": 6}, {"eval_loss": 1.8, "step": 9}]
    f = project.check("overfitting", project.run(metrics=metrics))
    assert f.verdict == "WARN" and "eval loss rose 28.6% after step 6" in f.evidence


def test_overfitting_warn_on_many_epochs_over_small_data(project):
    metrics = [{"loss": 1.0, "step": 1, "epoch": 5.0}, {"eval_loss": 1.0, "step": 1}, {"eval_loss": 0.9, "step": 2}]
    f = project.check("overfitting", project.run(metrics=metrics))
    assert f.verdict == "WARN" and "5 epochs over 40 examples" in f.evidence


def test_overfitting_warn_without_an_eval_loss_curve(project):
    f = project.check("overfitting", project.run(metrics=[{"loss": 1.0, "step": 1, "epoch": 1.0}]))
    assert f.verdict == "WARN" and "0 eval-loss point(s)" in f.evidence


def test_provenance_pass(project):
    f = project.check("provenance", project.run())
    assert f.verdict == "PASS" and "commit abc123" in f.evidence and "run complete" in f.evidence


def test_provenance_fail_without_git_commit_and_versions(project):
    f = project.check("provenance", project.run(git_commit=None, versions={}))
    assert f.verdict == "FAIL" and "lacks versions, git commit" in f.evidence


def test_provenance_fail_without_model_card(project):
    run = project.run()
    (run / "README.md").unlink()
    assert "model card" in project.check("provenance", run).evidence


def test_provenance_warn_without_eval_scores(project):
    f = project.check("provenance", project.run(eval=None))
    assert f.verdict == "WARN" and "no eval scores" in f.evidence


def test_provenance_fail_when_run_is_incomplete(project):
    run = project.run()
    (run / "sftpipe_run.json").unlink()
    f = project.check("provenance", run)
    assert f.verdict == "FAIL" and "not a complete run" in f.evidence


def test_regression_tested_pass(project):
    f = project.check("regression-tested", project.run())
    assert f.verdict == "PASS" and "IFEval prompt-strict delta -0.01" in f.evidence


def test_regression_tested_fail_on_forgetting(project):
    scores = {"baseline": "b", "candidates": {"final": {"deltas": {"ifeval_prompt_level_strict": -0.2,
                                                                   "general_retention": 0.7}}}}
    f = project.check("regression-tested", project.run(eval=scores))
    assert f.verdict == "FAIL" and "-0.2" in f.evidence and "forgetting" in f.fix


def test_regression_tested_warn_when_not_evaluated(project):
    f = project.check("regression-tested", project.run(eval=None))
    assert f.verdict == "WARN" and "sftpipe eval" in f.fix


def test_regression_tested_warn_without_regression_deltas(project):
    scores = {"baseline": "b", "candidates": {"final": {"deltas": {"loss/heldout": -0.3}}}}
    f = project.check("regression-tested", project.run(eval=scores))
    assert f.verdict == "WARN" and "no regression deltas" in f.evidence


def _context_check(project, name, run, raw_extra):
    from pathlib import Path

    from sftpipe.doctor import Context, run_checks

    ctx = Context(project.cfg(), config_path=Path("sftpipe.yaml"), run_dir=run,
                  raw={**project.config, **raw_extra})
    return run_checks(ctx, only=[name])[0]


def test_dpo_planned_skip_without_preference_data(project):
    f = project.check("dpo-planned", project.run())
    assert f.verdict == "SKIP" and "no preference data" in f.evidence


def test_dpo_planned_warn_with_preference_data_and_no_dpo_run(project):
    pairs = project.root / "data" / "pairs.jsonl"
    pairs.write_text(json.dumps({"prompt": "hi", "chosen": "a", "rejected": "b"}) + "\n")
    project.config["dpo"] = {"train": ["data/pairs.jsonl"]}
    project.write()
    f = project.check("dpo-planned", project.run())
    assert f.verdict == "WARN" and "pairs.jsonl" in f.evidence and "dpo.reference is not set" in f.evidence
    assert "runs/t as reference" in f.fix


def test_dpo_planned_warn_names_a_planned_reference_that_is_not_this_run(project):
    (project.root / "data" / "pairs.jsonl").write_text(json.dumps({"prompt": "hi", "chosen": "a", "rejected": "b"})
                                                       + "\n")
    project.config["dpo"] = {"train": ["data/pairs.jsonl"], "reference": "runs/other"}
    project.write()
    f = project.check("dpo-planned", project.run())
    assert f.verdict == "WARN" and "dpo.reference is runs/other, not the SFT run" in f.evidence


def _dpo_run(project, sft, reference):
    dpo = sft.parent / "t-dpo"
    shutil.copytree(sft, dpo)
    info = RunInfo.model_validate(json.loads((dpo / "run.json").read_text()))
    info.kind, info.reference = "dpo", reference
    write_info(dpo, info)


def test_dpo_planned_pass_when_dpo_references_the_sft_run(project):
    sft = project.run()
    _dpo_run(project, sft, {"run": str(sft.resolve()), "name": "t", "checkpoint": "final"})
    f = project.check("dpo-planned", sft)
    assert f.verdict == "PASS" and "t-dpo" in f.evidence


def test_dpo_planned_fail_when_dpo_references_another_run(project):
    sft = project.run()
    _dpo_run(project, sft, {"run": str(sft.parent / "some-other-sft"), "name": "some-other-sft"})
    f = project.check("dpo-planned", sft)
    assert f.verdict == "FAIL" and "is not the SFT run" in f.evidence


def test_dpo_planned_fail_when_dpo_names_no_reference(project):
    sft = project.run()
    _dpo_run(project, sft, None)
    assert "names no reference" in project.check("dpo-planned", sft).evidence


def test_serving_skip_without_export(project):
    f = project.check("serving", project.run())
    assert f.verdict == "SKIP" and "no export" in f.evidence


def _export(run):
    out = run / "merged"
    out.mkdir()
    for name in ("tokenizer_config.json", "tokenizer.json", "generation_config.json"):
        shutil.copy(run / name, out / name)
    return out


def test_serving_pass_when_export_matches(project):
    run = project.run()
    _export(run)
    f = project.check("serving", run)
    assert f.verdict == "PASS" and "merged: same template" in f.evidence


def test_serving_fail_when_export_template_differs(project):
    run = project.run()
    out = _export(run)
    cfg = json.loads((out / "tokenizer_config.json").read_text())
    write_json(out / "tokenizer_config.json", {**cfg, "chat_template": "{{ messages[0]['content'] }}"})
    f = project.check("serving", run)
    assert f.verdict == "FAIL" and "template sha256" in f.evidence


def test_serving_fail_when_export_does_not_stop_on_end_of_turn(project):
    run = project.run()
    out = _export(run)
    write_json(out / "generation_config.json", {"eos_token_id": 0})
    f = project.check("serving", run)
    assert f.verdict == "FAIL" and "eos lacks end-of-turn" in f.evidence


def test_serving_fail_when_serve_stop_tokens_lack_end_of_turn(project):
    f = _context_check(project, "serving", project.run(), {"serve": {"stop": ["</s>"]}})
    assert f.verdict == "FAIL" and "lack end-of-turn ['<|im_end|>']" in f.evidence


def test_dpo_planned_fail_when_dpo_recorded_another_template(project):
    sft = project.run()
    _dpo_run(project, sft, {"run": str(sft.resolve()), "name": "t", "template_sha256": "f" * 64})
    f = project.check("dpo-planned", sft)
    assert f.verdict == "FAIL" and "recorded template ffffffffffff" in f.evidence


def test_overfitting_warn_from_the_config_before_training(project):
    project.config["train"]["epochs"] = 5
    project.write()
    f = project.check("overfitting")
    assert f.verdict == "WARN" and "5 epochs over 40 examples" in f.evidence


def test_masks_read_a_run_whose_config_an_older_sftpipe_wrote(project):
    run = project.run()
    info = RunInfo.model_validate(json.loads((run / "run.json").read_text()))
    info.config = {**info.config, "retired_section": {"x": 1}}
    write_info(run, info)
    assert project.check("masks", run).verdict == "PASS"


def test_masks_warn_when_truncation_cuts_the_end_of_turn(project):
    long = " ".join(["word"] * 300)
    for r in project.train[:3]:
        r["messages"][2]["content"] = long
    project.config["render"].update(max_length=64, truncation="truncate")
    project.write()
    f = project.check("masks")
    assert f.verdict == "WARN" and "without its end-of-turn token (e.g. T0000" in f.evidence


def test_overfitting_skip_before_training_with_max_steps(project):
    project.config["train"]["max_steps"] = 100
    project.write()
    f = project.check("overfitting")
    assert f.verdict == "SKIP" and "max_steps" in f.evidence


def test_serving_finds_an_export_bundle_by_its_export_json(project):
    run = project.run()
    out = project.root / "exports" / "hf"
    out.mkdir(parents=True)
    for name in ("tokenizer_config.json", "tokenizer.json", "generation_config.json"):
        shutil.copy(run / name, out / name)
    write_json(out / "export.json", {"format": "hf", "run_dir": str(run), "run": "t"})
    f = project.check("serving", run)
    assert f.verdict == "PASS" and "exports/hf: same template" in f.evidence


def _gguf_bundle(project, run, template: str, eos: list[int]):
    import gguf

    out = project.root / "exports" / "gguf"
    out.mkdir(parents=True)
    w = gguf.GGUFWriter(str(out / "t.gguf"), "llama")
    w.add_chat_template(template)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    write_json(out / "export.json", {"format": "gguf", "file": "t.gguf", "run_dir": str(run), "eos_token_id": eos})


def test_serving_pass_for_a_gguf_bundle_with_the_run_template(project, tok):
    run = project.run()
    info = RunInfo.model_validate(json.loads((run / "run.json").read_text()))
    _gguf_bundle(project, run, info.template.source, info.template.end_of_turn_ids)
    project.config["serve"] = {"engine": "http://127.0.0.1:8002", "engine_kind": "llama.cpp"}  # behind the front
    project.write()
    f = project.check("serving", run)
    assert f.verdict == "PASS" and "exports/gguf: same template" in f.evidence, f.evidence


def test_serving_fail_for_a_gguf_bundle_with_another_template(project):
    run = project.run()
    _gguf_bundle(project, run, "{{ messages[0]['content'] }}", [2])
    f = project.check("serving", run)
    assert f.verdict == "FAIL" and "exports/gguf: template sha256" in f.evidence


def test_dpo_planned_does_not_warn_before_any_training(project):
    """Preference data and a config, but no SFT run yet: DPO is not late, it waits for SFT."""
    (project.root / "data" / "pairs.jsonl").write_text(json.dumps({"prompt": "hi", "chosen": "a", "rejected": "b"})
                                                       + "\n")
    project.config["dpo"] = {"train": ["data/pairs.jsonl"], "reference": "runs/t"}
    project.write()
    f = project.check("dpo-planned")
    assert f.verdict == "SKIP" and "waits for a complete SFT run" in f.evidence


def test_serving_warns_when_an_engine_export_has_no_front(project):
    run = project.run()
    out = _export(run)
    write_json(out / "export.json", {"format": "vllm", "run_dir": str(run.resolve())})
    f = project.check("serving", run)
    assert f.verdict == "WARN" and "no `serve.engine` front" in f.evidence
    project.config["serve"] = {"engine": "http://127.0.0.1:8001/v1"}
    project.write()
    assert project.check("serving", run).verdict == "PASS"
