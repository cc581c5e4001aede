"""Building a session: stratified sample, random and recorded left/right order, swapped repeats, WAL + schema
version, whole-file creation, and the one-line errors."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter

import pytest

from sftpipe.errors import ConfigError, SftpipeError
from sftpipe.review import store
from sftpipe.stages import review

from .conftest import CATEGORIES, RUN_A, RUN_B, config, make_run


def items(path) -> list[dict]:
    with sqlite3.connect(path) as con:
        con.row_factory = sqlite3.Row
        return [dict(r) for r in con.execute("SELECT * FROM items ORDER BY pos")]


def test_session_is_a_wal_sqlite_file_with_a_schema_version_and_hidden_provenance(session):
    con = store.connect(session)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.meta(con, "schema_version") == store.SCHEMA_VERSION
    runs = [dict(r) for r in con.execute("SELECT idx, name, checkpoint FROM runs ORDER BY idx")]
    assert runs == [{"idx": 0, "name": RUN_A, "checkpoint": "final"}, {"idx": 1, "name": RUN_B, "checkpoint": "final"}]
    got = items(session)
    assert len(got) == len(CATEGORIES) + 2
    for it in got:
        n = int(it["prompt_id"].split("-")[1])
        assert it["reply1"] == f"Second model answers {n}."  # run 1's reply stays run 1's whatever the side
        assert json.loads(it["prompt"])[0]["content"].startswith(f"Question {n} ")
    con.close()
    assert not [p.name for p in session.parent.iterdir() if p.name.startswith(".s.sqlite")]  # no temp file left


def test_left_right_order_is_random_seeded_and_recorded(runs, tmp_path):
    cfg = config(runs, n=12)
    a = items(review.init(cfg, RUN_A, RUN_B, out=tmp_path / "a.sqlite").session)
    b = items(review.init(cfg, RUN_A, RUN_B, out=tmp_path / "b.sqlite").session)
    c = items(review.init(config(runs, n=12, seed=7), RUN_A, RUN_B, out=tmp_path / "c.sqlite").session)
    left = [it["left_run"] for it in a]
    assert set(left) == {0, 1}  # both sides drawn (seed 0: not all on one side)
    assert left == [it["left_run"] for it in b]  # seeded: the same session twice
    assert [(it["prompt_id"], it["left_run"]) for it in c] != [(it["prompt_id"], it["left_run"]) for it in a]


def test_sample_is_stratified_by_category_and_repeats_are_swapped(runs, tmp_path):
    got = items(review.init(config(runs, n=6, repeats=3), RUN_A, RUN_B, out=tmp_path / "x.sqlite").session)
    first = [it for it in got if it["repeat_of"] is None]
    assert Counter(it["category"] for it in first) == {"refund": 3, "shipping": 2, "fraud": 1}
    repeats = [it for it in got if it["repeat_of"] is not None]
    assert len(repeats) == 3 and [it["pos"] for it in got] == list(range(9))
    by_id = {it["id"]: it for it in got}
    for r in repeats:
        o = by_id[r["repeat_of"]]
        assert (r["prompt_id"], r["reply0"], r["reply1"]) == (o["prompt_id"], o["reply0"], o["reply1"])
        assert r["left_run"] == 1 - o["left_run"]


def test_prompts_file_limits_the_pool(runs, tmp_path):
    ids = tmp_path / "ids.txt"
    ids.write_text("support-1\nsupport-3\n")
    got = items(review.init(config(runs), RUN_A, RUN_B, out=tmp_path / "x.sqlite", prompts=ids).session)
    assert sorted(it["prompt_id"] for it in got) == ["support-1", "support-3"]


def test_errors_are_one_line_and_nothing_is_written(runs, tmp_path, session):
    with pytest.raises(SftpipeError, match="already exists"):
        review.init(config(runs), RUN_A, RUN_B, out=session)
    with pytest.raises(ConfigError, match="not a plain run name"):
        review.init(config(runs), "..", RUN_B, out=tmp_path / "y.sqlite")
    make_run(runs, "unevaluated", ["x"] * len(CATEGORIES), sets=())
    import shutil
    shutil.rmtree(runs / "unevaluated" / "eval")
    with pytest.raises(SftpipeError, match="run `sftpipe eval`"):
        review.init(config(runs), RUN_A, "unevaluated", out=tmp_path / "y.sqlite")
    with pytest.raises(SftpipeError, match="name the same replies"):
        review.init(config(runs), RUN_A, RUN_A, out=tmp_path / "y.sqlite")
    (runs / RUN_B / "adapter_model.safetensors").write_text("changed")  # no longer a complete run
    with pytest.raises(SftpipeError, match="not a complete run"):
        review.init(config(runs), RUN_A, RUN_B, out=tmp_path / "y.sqlite")
    assert not (tmp_path / "y.sqlite").exists()
    bad = tmp_path / "bad.sqlite"
    bad.write_text("not a database at all, just text " * 100)
    with pytest.raises(SftpipeError, match="not a review session"):
        store.connect(bad)


def test_identical_replies_are_left_out_and_counted(tmp_path):
    """A verdict on two identical replies says nothing and can never become a DPO pair, yet counted in the win rate:
    such prompts are not put to reviewers, and init says how many were left out."""
    root = tmp_path / "runs"
    same = [f"Reply {i}." for i in range(len(CATEGORIES))]
    make_run(root, "a", same)
    make_run(root, "b", [r if i % 3 else f"Other {i}." for i, r in enumerate(same)])
    result = review.init(config(root, n=100), "a", "b", out=tmp_path / "s.sqlite")
    got = items(result.session)
    assert result.identical == 8 and len(got) == result.items == 4
    assert all(it["reply0"] != it["reply1"] for it in got)
    make_run(root, "c", same)
    with pytest.raises(SftpipeError, match="both runs replied the same to all 12 shared prompts"):
        review.init(config(root), "a", "c", out=tmp_path / "t.sqlite")


def test_a_run_against_its_base_model(tmp_path):
    """The most common comparison: the run's replies against its base model's, which its eval wrote under
    generations/baseline (`--vs base`, or `--vs RUN:base`)."""
    root = tmp_path / "runs"
    run = make_run(root, "sft", [f"Tuned reply {i}." for i in range(len(CATEGORIES))])
    base = run / "eval" / "generations" / "baseline"
    base.mkdir()
    rows = [json.loads(x) for x in (run / "eval" / "generations" / "final" / "support.jsonl").read_text().splitlines()]
    base.joinpath("support.jsonl").write_text("".join(json.dumps({**r, "output": f"Base {i}."}) + "\n"
                                                      for i, r in enumerate(rows)))
    for vs in ("base", "sft:base"):
        result = review.init(config(root), "sft", vs, out=tmp_path / f"{vs.replace(':', '-')}.sqlite")
        assert result.runs == ["sft", "sft:base"] and result.items == len(CATEGORIES)
        got = items(result.session)
        assert all(it["reply0"].startswith("Tuned") and it["reply1"].startswith("Base") for it in got)
        with store.connect(result.session) as con:
            assert [r["checkpoint"] for r in con.execute("SELECT checkpoint FROM runs ORDER BY idx")] == \
                ["final", "baseline"]
    with pytest.raises(SftpipeError, match="name the same replies"):
        review.init(config(root), "sft", "sft", out=tmp_path / "same.sqlite")
