"""Truncation policies and the mask report: every record accounted for, no example left untrained."""

from __future__ import annotations

import doctest
from collections import Counter

import pytest

from sftpipe.conversation import Conversation, Message
import sftpipe.dataset
from sftpipe.dataset import build_examples, stratified_indices
from sftpipe.errors import RecordError
from sftpipe.render import ChatRenderer
from sftpipe.templates import load_template


def long_conv(turns: int, words: int = 30, **meta) -> Conversation:
    msgs = [Message("system", "Be brief.")]
    for k in range(turns):
        msgs += [Message("user", f"question {k} " + "word " * words),
                 Message("assistant", f"answer {k} " + "ok " * words)]
    return Conversation(msgs, meta)


@pytest.fixture()
def renderer(tok):
    return ChatRenderer(tok, load_template("model", tok))


def test_drop_policy_rejects_too_long_with_reason(renderer):
    convs = [long_conv(1, id="short"), long_conv(6, id="long")]
    with pytest.raises(RecordError, match="long.*max_length 160"):
        build_examples(convs, renderer, max_length=160)
    examples, rejects, report = build_examples(convs, renderer, max_length=160, on_error="skip")
    assert [e.meta["id"] for e in examples] == ["short"]
    assert [r["reason"] for r in rejects] == ["too_long"] and report.rejected == {"too_long": 1}
    assert report.conversations_in == report.conversations_kept + len(rejects) == 2


def test_drop_oldest_turns_keeps_the_system_prompt_and_latest_turns(renderer, tok):
    (ex,), rejects, report = build_examples([long_conv(6)], renderer, max_length=160, truncation="drop_oldest_turns")
    assert len(ex.input_ids) <= 160 and report.truncated == 1 and not rejects
    assert "Be brief." in ex.text and "answer 5" in ex.text and "question 0" not in ex.text
    assert ex.eot_trained == ex.trained_messages >= 1


def test_truncate_cuts_tokens_and_reports_lost_end_of_turn(renderer):
    (ex,), _, report = build_examples([long_conv(2)], renderer, max_length=100, truncation="truncate")
    assert len(ex.input_ids) == 100 and ex.n_trained > 0 and report.truncated == 1
    assert report.eot_coverage < 1.0  # the cut reply lost its end-of-turn token, and the report says so


def test_truncate_never_leaves_an_untrained_example(renderer):
    conv = Conversation([Message("user", "word " * 200), Message("assistant", "fine")], {"id": "u"})
    _, rejects, _ = build_examples([conv], renderer, max_length=50, truncation="truncate", on_error="skip")
    assert [r["reason"] for r in rejects] == ["no_trained_tokens_after_truncation"]


def test_stratified_indices_sample_every_category_in_proportion():
    cats = ["order"] * 60 + ["refund"] * 30 + ["fraud"] * 6 + ["lockout"] * 3 + ["rare"]
    picked = stratified_indices(cats, 20, seed=3)
    counts = Counter(cats[i] for i in picked)
    assert len(picked) == 20 == len(set(picked)) and picked == sorted(picked)
    assert set(counts) == set(cats)  # the first 20 would be 'order' only
    assert counts["order"] > counts["refund"] > counts["fraud"] >= 1
    assert stratified_indices(cats, 20, seed=3) == picked and stratified_indices(cats, 20, seed=4) != picked
    assert stratified_indices(cats, 500) == list(range(len(cats)))


def test_doctests():
    assert doctest.testmod(sftpipe.dataset).failed == 0
