"""End-to-end `run_curate` on the tiny checked-in export: every reason fires on its record, nothing is lost,
outputs are deterministic and hashed as documented, and PII never reaches an output file."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from sftpipe.curate import pipeline
from sftpipe.curated import content_hash
from sftpipe.config.curate import CurateConfig
from sftpipe.curate.pipeline import run_curate
from sftpipe.errors import RecordError

ASSETS = Path(__file__).parents[1] / "assets" / "curate"
RAW = ASSETS / "raw.jsonl"

# record id -> (stage, reason) it must be rejected with
EXPECTED = {
    "BAD1": ("read", "parse"), "BAD2": ("read", "invalid"), "Z001": ("normalize", "invalid"),
    "D001": ("dedup", "exact_duplicate"), "D002": ("dedup", "near_duplicate"),
    "E001": ("filters", "empty_reply"), "T001": ("filters", "truncated_reply"), "T002": ("filters", "truncated_reply"),
    "S001": ("filters", "too_short"), "G001": ("filters", "too_long"), "L001": ("filters", "wrong_language"),
    "X001": ("filters", "toxic"), "B001": ("filters", "boilerplate_opener"), "K001": ("decontaminate", "contaminated"),
    "Q001": ("quality", "low_quality"),
}
PII_VALUES = ["Priya", "Raman", "priya.raman@example.com", "(415) 555-0132", "4111 1111 1111 1111", "221 Baker Street",
              "203.0.113.7", "jo.bad@example.org"]


def config(**over) -> CurateConfig:
    raw = {"filters": {"min_tokens": 20, "max_tokens": 300},
           "decontaminate": {"eval_sets": {"tiny": str(ASSETS / "eval_prompts.jsonl")}},
           "mix": {"enabled": True, "source": str(ASSETS / "general.jsonl"), "ratio": 0.2},
           "split": {"eval_ratio": 0.25}, "workers": 1, "progress": False}
    raw.update(over)
    return CurateConfig.model_validate(raw)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def rejected_ids(path: Path) -> dict:
    out = {}
    for r in read_jsonl(path):
        rec = r["record"]
        rid = rec.get("id") if isinstance(rec, dict) else ("BAD1" if "BAD1" in rec else None)
        out[rid] = (r["stage"], r["reason"])
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return run_curate([RAW], config(), tmp_path_factory.mktemp("cur"))


def test_every_reason_fires_on_its_record(run):
    got = rejected_ids(run.files["rejected.jsonl"])
    for rid, want in EXPECTED.items():
        assert got.get(rid) == want, (rid, got.get(rid))


def test_rejected_details_name_the_evidence(run):
    by_id = {}
    for r in read_jsonl(run.files["rejected.jsonl"]):
        if isinstance(r["record"], dict) and "id" in r["record"]:
            by_id[r["record"]["id"]] = r
    assert by_id["D001"]["details"]["duplicate_of"] == "C001"
    assert by_id["D002"]["details"]["duplicate_of"] == "C002"
    assert by_id["D002"]["details"]["similarity"] >= 0.8
    assert by_id["K001"]["details"]["eval_set"] == "tiny" and by_id["K001"]["details"]["item"] == 1
    assert by_id["L001"]["details"]["language"] == "es"
    assert by_id["T002"]["details"]["kind"] == "unbalanced_code_fence"
    assert by_id["BAD2"]["details"]["error"] == "no_assistant"
    assert by_id["BAD2"]["source"] == {"path": str(RAW), "line": 10}


def test_records_in_equal_kept_plus_rejected(run):
    n_lines = len(RAW.read_text().splitlines()) + len((ASSETS / "general.jsonl").read_text().splitlines())
    counts = run.counts
    assert counts["in"] == n_lines
    assert counts["in"] == counts["kept"] + counts["rejected"]
    assert counts["kept"] == sum(len(read_jsonl(run.files[f"{s}.jsonl"])) for s in ("train", "eval"))
    assert counts["rejected"] == len(read_jsonl(run.files["rejected.jsonl"]))
    for stage in run.report["stages"]:
        assert stage["in"] == stage["out"] + sum(stage["dropped"].values()), stage


def test_mix_blends_the_configured_ratio(run):
    mix = next(s for s in run.report["stages"] if s["stage"] == "mix")
    added = mix["stats"]["general_added"]
    assert added == round(0.2 * mix["out"]) and mix["dropped"]["not_sampled"] == 10 - added
    general = [r for s in ("train", "eval") for r in read_jsonl(run.files[f"{s}.jsonl"]) if r.get("mix") == "general"]
    assert len(general) == added and all(r["category"] == "general" for r in general)


def test_hashes_follow_the_documented_definition(run):
    for name in ("train.jsonl", "eval.jsonl", "rejected.jsonl"):
        assert run.hashes[name] == content_hash(read_jsonl(run.files[name]))
    report = json.loads(run.files["report.json"].read_text())
    assert report["hashes"] == run.hashes and "sort_keys=True" in report["hash_definition"]
    assert all(isinstance(s["seconds"], float) for s in report["stages"])


def test_same_seed_and_input_give_same_hashes(run, tmp_path):
    again = run_curate([RAW], config(), tmp_path / "again")
    assert again.hashes == run.hashes
    other = run_curate([RAW], config(split={"eval_ratio": 0.25, "seed": 7}), tmp_path / "other")
    assert other.hashes["rejected.jsonl"] == run.hashes["rejected.jsonl"]
    assert other.hashes["train.jsonl"] != run.hashes["train.jsonl"]


def test_shards_and_workers_give_the_same_output(run, tmp_path, monkeypatch):
    shards = []
    plan = pipeline.plan_shards
    monkeypatch.setattr(pipeline, "plan_shards", lambda paths, size: shards.append(plan(paths, 1500)) or shards[-1])
    ticks, totals = Counter(), {}

    def progress(label, total):
        totals[label] = total
        return lambda k: ticks.update({label: k})
    pooled = run_curate([RAW], config(workers=2), tmp_path / "pooled", progress=progress)
    assert len(shards[0]) > 3 and len(shards[1]) > 1  # the main and the mix inputs, each in several shards
    assert ticks == totals == {"main shards": len(shards[0]), "mix shards": len(shards[1]),
                               "write": pooled.report["counts"]["in"]}
    assert pooled.hashes == run.hashes
    assert pooled.report["stages"] == [{**s, "seconds": p["seconds"]} for s, p in zip(run.report["stages"],
                                                                                       pooled.report["stages"])]
    assert not list(tmp_path.glob(".pooled.work-*"))  # a finished run leaves no work folder


def test_no_pii_value_in_any_output(run):
    text = "".join(run.files[f].read_text(encoding="utf-8") for f in ("train.jsonl", "eval.jsonl", "rejected.jsonl"))
    assert "[EMAIL]" in text and "[CARD]" in text and "[PERSON]" in text
    for value in PII_VALUES:
        assert value not in text, value


def test_strict_stops_at_the_first_bad_record(tmp_path):
    with pytest.raises(RecordError, match="invalid JSON"):
        run_curate([RAW], config(strict=True), tmp_path)


def test_disabled_stages_do_not_run(tmp_path):
    cfg = config(filters={"enabled": False}, dedup={"enabled": False}, quality={"enabled": False},
                 decontaminate={"enabled": False}, mix={"enabled": False}, split={"enabled": False})
    res = run_curate([RAW], cfg, tmp_path)
    assert [s["stage"] for s in res.report["stages"]] == ["read", "normalize", "pii"]
    assert set(res.files) == {"train.jsonl", "rejected.jsonl", "report.json"}
    assert res.counts["rejected"] == 3  # BAD1, BAD2, Z001


def test_the_judge_reads_its_sample_from_the_shards(tmp_path):
    """The quality judge sees the records of its seeded sample as they reached the quality stage."""
    from http.server import HTTPServer
    import threading

    from .test_curate_stages import _Judge

    server = HTTPServer(("127.0.0.1", 0), _Judge)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        judge = {"enabled": True, "url": f"http://127.0.0.1:{server.server_port}/v1", "sample": 5, "weight": 1.0,
                 "timeout_s": 5}
        res = run_curate([RAW], config(quality={"min_score": 0.5, "judge": judge}), tmp_path / "out")
    finally:
        server.shutdown()
    stats = next(s for s in res.report["stages"] if s["stage"] == "quality")["stats"]
    assert stats["judged"] == 5 and stats["judge_failed"] == 0
    low = [r["details"] for r in read_jsonl(res.files["rejected.jsonl"]) if r["reason"] == "low_quality"]
    assert all(d["parts"] for d in low)
    # the judge rates "ok ok" replies 2/10: it read the sampled record's text, and its rating is the score
    judged = [d for d in low if "judge" in d]
    assert judged and all(d["judge"] == d["score"] == pytest.approx(1 / 9, abs=1e-3) for d in judged)
