"""Data checks (curate report, hashes, near-duplicates, contamination, held-out split): one test per reason."""

from __future__ import annotations

import copy
import json


def test_curation_ran_pass(project):
    f = project.check("curation-ran")
    assert f.verdict == "PASS" and "53 in, 48 kept, 5 rejected" in f.evidence


def test_curation_ran_fail_without_report(project):
    (project.root / "curated" / "report.json").unlink()
    f = project.check("curation-ran")
    assert f.verdict == "FAIL" and "no curate report.json" in f.evidence and "sftpipe curate" in f.fix


def test_curation_ran_fail_when_pii_stage_missing(project):
    project.drop_stage("pii")
    f = project.check("curation-ran")
    assert f.verdict == "FAIL" and "pii did not run" in f.evidence


def test_curation_ran_warn_when_general_source_skipped_pii(project):
    project.drop_stage("mix/pii")
    f = project.check("curation-ran")
    assert f.verdict == "WARN" and "general source skipped pii" in f.evidence


def test_curation_ran_fail_when_counts_do_not_add_up(project):
    project.report["counts"]["rejected"] = 2
    project.save_report()
    assert "do not add up" in project.check("curation-ran").evidence


def test_data_hash_pass_file_report_and_run_agree(project):
    run = project.run()
    f = project.check("data-hash", run)
    assert f.verdict == "PASS" and f.evidence.endswith("runs/t/run.json data.train_hash")


def test_data_hash_fail_when_file_changed_after_curate(project):
    project.train[0]["messages"][2]["content"] = "edited by hand"
    project.write(report=False)
    f = project.check("data-hash")
    assert f.verdict == "FAIL" and "!= curated/report.json" in f.evidence


def test_data_hash_fail_when_run_trained_other_data(project):
    run = project.run(data={"train_hash": "0" * 64, "hash_definition": "x"})
    f = project.check("data-hash", run)
    assert f.verdict == "FAIL" and "data.train_hash 000000000000" in f.evidence


def test_data_hash_skip_without_report(project):
    (project.root / "curated" / "report.json").unlink()
    assert project.check("data-hash").verdict == "SKIP"


def test_near_duplicates_pass(project):
    f = project.check("near-duplicates")
    assert f.verdict == "PASS" and "0/40" in f.evidence and "0/8 eval" in f.evidence


def test_near_duplicates_warn_when_left_in_train(project):
    for i in range(3):
        dup = copy.deepcopy(project.train[10 + i])
        dup["id"] = f"D{i}"
        dup["messages"][2]["content"] += " Thanks!"
        project.train.append(dup)
    project.write()
    f = project.check("near-duplicates")
    assert f.verdict == "WARN" and "3/43" in f.evidence and "T0010~D0" in f.evidence


def test_near_duplicates_fail_when_eval_repeats_train(project):
    leak = copy.deepcopy(project.train[5])
    leak["id"] = "E-leak"
    leak["messages"][1]["content"] += " please"
    project.eval.append(leak)
    project.write()
    f = project.check("near-duplicates")
    assert f.verdict == "FAIL" and "eval E-leak~train T0005" in f.evidence


def test_decontaminated_pass(project):
    f = project.check("decontaminated")
    assert f.verdict == "PASS" and "redteam 0 copied" in f.evidence and "ifeval" in f.evidence


def test_decontaminated_fail_when_eval_prompt_copied_into_train(project):
    project.train[4]["messages"][1]["content"] = project.redteam[2]["messages"][0]["content"]
    project.write()
    f = project.check("decontaminated")
    assert f.verdict == "FAIL" and "(nearly) copied" in f.evidence and "RT2" in f.evidence
    assert "curate.decontaminate.eval_sets" in f.fix


def test_decontaminated_warn_when_eval_prompt_shares_a_phrase(project):
    words = project.redteam[1]["messages"][0]["content"].split()
    project.train[4]["messages"][1]["content"] = "Hello there. " + " ".join(words[3:12]) + " thanks."
    project.write()
    f = project.check("decontaminated")
    assert f.verdict == "WARN" and "share a word n-gram" in f.evidence and "RT1" in f.evidence


def test_decontaminated_warn_when_stage_did_not_run(project):
    project.drop_stage("decontaminate")
    f = project.check("decontaminated")
    assert f.verdict == "WARN" and "decontaminate stage did not run" in f.evidence


def test_held_out_split_pass(project):
    f = project.check("held-out-split")
    assert f.verdict == "PASS" and "stratified by category" in f.evidence


def test_held_out_split_fail_without_eval(project):
    project.config["data"]["eval"] = []
    project.write()
    assert "no held-out set" in project.check("held-out-split").evidence


def test_held_out_split_fail_when_eval_id_in_train(project):
    project.eval[0]["id"] = "T0003"
    project.write()
    f = project.check("held-out-split")
    assert f.verdict == "FAIL" and "T0003" in f.evidence


def test_held_out_split_fail_when_train_is_eval(project):
    project.config["data"]["eval"] = ["curated/train.jsonl"]
    project.write()
    f = project.check("held-out-split")
    assert f.verdict == "FAIL" and "both data.train and data.eval" in f.evidence


def test_held_out_split_warn_when_not_stratified(project):
    project.drop_stage("split")
    for r in project.eval:
        r["category"] = "refund"
    project.write(report=False)
    (project.root / "curated" / "report.json").write_text(json.dumps(project.report))
    f = project.check("held-out-split")
    assert f.verdict == "WARN" and "total variation" in f.evidence and "curate.split.by" in f.fix


def test_held_out_split_warn_when_eval_has_no_category(project):
    for r in project.eval:
        del r["category"]
    project.write()
    f = project.check("held-out-split")
    assert f.verdict == "WARN" and "carry no 'category' field" in f.evidence


def test_curation_ran_fail_when_nothing_was_kept(project):
    project.report["counts"].update(kept=0, rejected=53, train=0, eval=0)
    project.report["rejected_by_reason"] = {"filters/error": 50, "dedup/exact_duplicate": 3}
    project.save_report()
    f = project.check("curation-ran")
    assert f.verdict == "FAIL" and "kept no training record" in f.evidence and "filters/error 50" in f.evidence


def test_data_hash_fail_when_held_out_set_changed_after_curate(project):
    project.eval[0]["messages"][2]["content"] = "a better reference, written after the split"
    project.write(report=False)
    f = project.check("data-hash")
    assert f.verdict == "FAIL" and "held-out set changed since curate" in f.evidence
