"""Exports (DPO pairs that `sftpipe dpo` reads, rubric rows that `sftpipe eval` imports) and statistics against
a hand-computed case."""

from __future__ import annotations

import json

import pytest

from sftpipe.config import SftpipeConfig
from sftpipe.dpo.pairs import parse_pair
from sftpipe.evaluate.evaluator import human_for
from sftpipe.evaluate.score import load_human
from sftpipe.review import store
from sftpipe.review.stats import cohen_kappa, krippendorff_alpha
from sftpipe.stages import review

from .conftest import RUN_A, RUN_B, config

# Run-level winners ("0" = RUN_A, "1" = RUN_B) given by two reviewers on the first six items.
ALICE = ["0", "0", "0", "1", "1", "tie"]
BOB = ["0", "0", "1", "1", "tie", "tie"]


def answer(con, reviewer, pos: int, winner: str, by_run: dict[int, dict]) -> None:
    it = store.item_at(con, pos)
    left = it["left_run"]
    verdict = {str(left): "A", str(1 - left): "B"}.get(winner, winner)
    store.record(con, reviewer, it["id"], verdict, {"A": by_run.get(left, {}), "B": by_run.get(1 - left, {})}, "")


@pytest.fixture
def rated(runs, tmp_path):
    path = review.init(config(runs, n=12), RUN_A, RUN_B, out=tmp_path / "r.sqlite").session
    con = store.connect(path)
    who = {}
    for name in ("alice", "bob"):
        store.add_reviewer(con, name)
        who[name] = store.Reviewer(*con.execute("SELECT id, name FROM reviewers WHERE name = ?", (name,)).fetchone())
    for pos, (a, b) in enumerate(zip(ALICE, BOB)):
        extra = {"policy": 5} if pos == 0 else {}
        answer(con, who["alice"], pos, a, {0: {"tone": 4, **extra}, 1: {"tone": 2}})
        answer(con, who["bob"], pos, b, {0: {"tone": 4}, 1: {"tone": 3}})
    store.record(con, who["bob"], store.item_at(con, 6)["id"], "skip", {}, "")
    con.close()
    return path


def test_agreement_matches_the_hand_computed_values(rated):
    # kappa: po = 4/6; alice 0:3 1:2 tie:1, bob 0:2 1:2 tie:2 -> pe = (6 + 4 + 2) / 36 = 1/3; (2/3-1/3)/(2/3) = 0.5
    assert cohen_kappa(ALICE, BOB) == 0.5
    # alpha: coincidences o00=4 o11=2 ott=2 o01=o10=o1t=ot1=1; n0=5 n1=4 nt=3, n=12;
    # 1 - (n-1) * 4 / (144 - 25 - 16 - 9) = 1 - 44/94
    assert krippendorff_alpha([list(p) for p in zip(ALICE, BOB)]) == round(1 - 44 / 94, 4)
    s = review.stats(rated)
    assert s["agreement"] == {"reviewers": 2, "alpha": 0.5319, "kappa": 0.5, "kappa_items": 6}
    # per item outcome for RUN_A: 1, 1, .5, 0, .25, .5 -> 3.25 / 6
    assert s["win_rate"]["rate"] == round(3.25 / 6, 4) and s["win_rate"]["items"] == 6
    lo, hi = s["win_rate"]["ci95"]
    assert lo < s["win_rate"]["rate"] < hi
    assert s["verdicts"] == {RUN_A: 5, RUN_B: 4, "tie": 3, "both_bad": 0} and s["skips"] == 1
    assert s["rubric"][RUN_A] == {"policy": {"mean": 5.0, "n": 1}, "tone": {"mean": 4.0, "n": 6}}
    assert s["rubric"][RUN_B] == {"tone": {"mean": 2.5, "n": 6}}


def test_krippendorff_alpha_on_krippendorffs_published_example():
    # Krippendorff (2011), "Computing Krippendorff's alpha-reliability", nominal data, 4 coders x 12 units: 0.743
    coders = ["1 2 3 3 2 1 4 1 2 . . .", "1 2 3 3 2 2 4 1 2 5 . 3", ". 3 3 3 2 3 4 2 2 5 1 .",
              "1 2 3 3 2 4 4 1 2 5 1 ."]
    units = [[v for v in col if v != "."] for col in zip(*(c.split() for c in coders))]
    assert round(krippendorff_alpha(units), 3) == 0.743


def test_swapped_repeats_measure_consistency(runs, tmp_path):
    path = review.init(config(runs, n=4, repeats=2), RUN_A, RUN_B, out=tmp_path / "c.sqlite").session
    con = store.connect(path)
    store.add_reviewer(con, "carol")
    carol = store.Reviewer(1, "carol")
    for pos in range(4):
        answer(con, carol, pos, "0", {})
    repeats = con.execute("SELECT pos FROM items WHERE repeat_of IS NOT NULL ORDER BY pos").fetchall()
    answer(con, carol, repeats[0][0], "0", {})  # same run again, although it is now on the other side
    answer(con, carol, repeats[1][0], "1", {})
    con.close()
    assert review.stats(path)["consistency"] == {"carol": {"same": 1, "n": 2, "rate": 0.5}}


def test_pairs_are_trl_records_with_provenance(rated, tmp_path):
    out = tmp_path / "pairs.jsonl"
    assert review.export(rated, pairs=out).pairs == (out, 4)  # items 1, 2 (run A), 4, 5 (run B); 3 and 6 no winner
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["chosen_run"] for r in rows] == [RUN_A, RUN_A, RUN_B, RUN_B]
    for r in rows:
        pair = parse_pair(r)  # what `sftpipe dpo` reads
        assert pair.prompt[0].role == "user" and pair.chosen.role == "assistant"
        n = r["prompt_id"].split("-")[1]
        second = f"Second model answers {n}."
        assert (pair.chosen.content == second) == (r["chosen_run"] == RUN_B)
        assert (pair.rejected.content == second) == (r["rejected_run"] == RUN_B)
        assert r["chosen_checkpoint"] == "final" and r["source"] == "sftpipe review" and r["set"] == "support"
    assert review.export(rated, pairs=out, agree=True).pairs == (out, 3)
    assert all(json.loads(x)["agreed"] for x in out.read_text().splitlines())


def test_rubric_rows_are_what_eval_imports(rated, tmp_path, runs):
    out = tmp_path / "rubric.jsonl"
    assert review.export(rated, rubric=out).rubric == (out, 12)
    human = load_human(out)
    assert human[RUN_A] == {"n": 6, "human_tone": 0.75, "human_policy": 1.0}
    assert human[RUN_B] == {"n": 6, "human_tone": round((2.5 - 1) / 4, 4)}
    cfg = SftpipeConfig.model_validate({"eval": {"human": str(out)}})
    assert human_for(cfg.eval, runs / RUN_B)["final"] == human[RUN_B]  # eval maps the run's name to its weights


def test_a_configured_rubric_is_scored_and_still_imports(runs, tmp_path):
    from fastapi.testclient import TestClient

    from sftpipe.review.app import create_app

    path = review.init(config(runs, n=3, rubric=["tone", "empathy"]), RUN_A, RUN_B, out=tmp_path / "e.sqlite").session
    with store.connect(path) as con:
        token = store.add_reviewer(con, "gus")
    client = TestClient(create_app(path), follow_redirects=False)
    client.get(f"/login?token={token}")
    page = client.get("/item/0").text
    assert 'name="A_empathy"' in page and 'name="B_empathy"' in page and 'name="A_policy"' not in page
    csrf = page.split('name="csrf" value="')[1].split('"')[0]
    assert client.post("/item/0", data={"verdict": "A", "A_empathy": "5", "B_empathy": "3", "A_policy": "1",
                                        "csrf": csrf}).status_code == 303
    out = tmp_path / "h.jsonl"
    review.export(path, rubric=out)
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert sorted(r["empathy"] for r in rows) == [3, 5]
    assert all(r["policy"] is None and r["tone"] is None for r in rows)  # JSON null, not ""
    assert load_human(out) == {}  # nothing eval scores, and no error either


def test_identical_replies_make_no_pair(rated, tmp_path):
    con = store.connect(rated)
    first = store.item_at(con, 0)
    con.execute("UPDATE items SET reply1 = reply0 WHERE id = ?", (first["id"],))
    con.close()
    out = tmp_path / "pairs.jsonl"
    assert review.export(rated, pairs=out).pairs == (out, 3)
    assert first["prompt_id"] not in [json.loads(x)["prompt_id"] for x in out.read_text().splitlines()]
