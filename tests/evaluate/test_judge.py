"""The pairwise judge: verdict parsing, and the client against a local OpenAI-compatible server over real HTTP."""

from __future__ import annotations

import pytest

from sftpipe.chat_client import ChatClient, EndpointError
from sftpipe.conversation import Message
from sftpipe.evaluate.items import EvalItem
from sftpipe.evaluate.judge import (
    default_rubric,
    fill_rubric,
    judge_pairs,
    load_rubric,
    parse_verdict,
    summarize,
)
from sftpipe.stats import length_controlled_win_rate


def _items(n: int) -> list[EvalItem]:
    return [EvalItem(id=f"p{k}", set="s", category="c", messages=[Message("user", f"question {k}")],
                     target=f"reference {k}") for k in range(n)]


@pytest.mark.parametrize("text,verdict", [
    ("A", "A"), ("B", "B"), ("tie", "tie"), ("Tie.", "tie"), ("**A**", "A"), ("Verdict: B", "B"),
    ("Final verdict: A", "A"), ("Reply B", "B"), ("[[A]]", "A"), ("My answer is [[C]]", "tie"),
    ("A\n\nReply A quotes the right amount.", "A"), ("Both are fine.\nVerdict: tie", "tie"), ("draw", "tie"),
    ("", "invalid"), ("I cannot decide.", "invalid"), ("A or B", "invalid"), ("[[A]] no, [[B]]", "invalid"),
    ("A\nB", "invalid"), ("Answer: C", "invalid"), (None, "invalid"),
])
def test_parse_verdict(text, verdict):
    assert parse_verdict(text) == verdict


def test_fill_rubric_keeps_braces_in_replies_as_written():
    prompt = fill_rubric(default_rubric(), [{"role": "user", "content": "hi {reply_b}"}], "A says {reply_b}",
                         '{"amount": 5}', None)
    assert "A says {reply_b}" in prompt and "hi {reply_b}" in prompt and '{"amount": 5}' in prompt
    assert "(none)" in prompt  # no reference


def test_load_rubric_requires_every_placeholder(tmp_path):
    bad = tmp_path / "r.md"
    bad.write_text("Judge {reply_a} vs {reply_b}", encoding="utf-8")
    with pytest.raises(ValueError, match="conversation"):
        load_rubric(str(bad))
    assert load_rubric(None) == default_rubric()


def test_fair_judge_sees_both_orders_and_counts_consistent_wins(judge_server):
    def decide(prompt):
        a, b = judge_server.replies(prompt)
        return "A" if "GOOD" in a else "B" if "GOOD" in b else "tie"

    items = _items(4)
    cand = ["GOOD answer", "GOOD answer", "GOOD answer", "meh"]
    base = ["meh", "meh", "meh", "GOOD but baseline"]
    with judge_server(decide, max_requests=8) as srv:
        pairs = judge_pairs(ChatClient(srv.url, "judge-model", api_key="k3y"), default_rubric(), items, cand, base,
                            concurrency=3)
    assert len(srv.requests) == 8  # both orders, nothing more
    shown_first = [srv.replies(r["messages"][0]["content"])[0] for r in srv.requests]
    assert sorted(shown_first) == sorted(cand + base)  # every reply was shown in position A once
    assert all(r["model"] == "judge-model" and r["temperature"] == 0 for r in srv.requests)
    assert all(h.get("Authorization") == "Bearer k3y" for h in srv.headers)
    assert [(p.first, p.second, p.outcome) for p in pairs] == [("A", "B", 1.0)] * 3 + [("B", "A", 0.0)]
    s = summarize(pairs, n_boot=500)
    assert (s["wins"], s["losses"], s["ties"], s["inconsistent"], s["invalid_verdicts"]) == (3, 1, 0, 0, 0)
    assert s["win_rate"] == 0.75
    assert s["ci95"][0] <= 0.75 <= s["ci95"][1] and s["ci95"][1] - s["ci95"][0] > 0.2  # n=4: a wide interval
    lens = [p.len_candidate for p in pairs], [p.len_baseline for p in pairs]
    assert s["length_controlled_win_rate"] == round(length_controlled_win_rate([1, 1, 1, 0], *lens), 4)


def test_position_biased_judge_gives_ties(judge_server):
    with judge_server(lambda prompt: "A", max_requests=6) as srv:
        pairs = judge_pairs(ChatClient(srv.url, "j"), default_rubric(), _items(3), ["x"] * 3, ["y"] * 3)
    s = summarize(pairs, n_boot=200)
    assert len(srv.requests) == 6
    assert (s["ties"], s["inconsistent"], s["win_rate"]) == (3, 3, 0.5)


def test_unparsable_judge_reply_is_invalid_and_a_tie(judge_server):
    replies = iter(["I think both have merit.", "B", "Reply A is better? Hard to say", "A"])
    with judge_server(lambda prompt: next(replies), max_requests=4) as srv:
        pairs = judge_pairs(ChatClient(srv.url, "j"), default_rubric(), _items(2), ["x", "x"], ["y", "y"],
                            concurrency=1)
    s = summarize(pairs, n_boot=200)
    assert [(p.first, p.second) for p in pairs] == [("invalid", "B"), ("invalid", "A")]
    assert (s["invalid_verdicts"], s["ties"], s["inconsistent"], s["win_rate"]) == (2, 2, 0, 0.5)
    assert pairs[0].raw_first == "I think both have merit."


def test_client_retries_server_errors_then_fails_loudly(judge_server):
    answers = iter([503, "tie"])
    with judge_server(lambda prompt: next(answers), max_requests=2) as srv:
        assert ChatClient(srv.url, "j", retries=1, backoff_s=0.01).complete("q") == "tie"
    assert len(srv.requests) == 2
    with judge_server(lambda prompt: 500, max_requests=3) as srv:
        with pytest.raises(EndpointError, match="after 3 attempt"):
            ChatClient(srv.url, "j", retries=2, backoff_s=0.01).complete("q")
    assert len(srv.requests) == 3
    with judge_server(lambda prompt: 400, max_requests=3) as srv:  # a client error is not retried
        with pytest.raises(EndpointError, match="HTTP 400"):
            ChatClient(srv.url, "j", retries=2, backoff_s=0.01).complete("q")
    assert len(srv.requests) == 1


def test_unreachable_endpoint_raises(judge_server):
    with judge_server(lambda prompt: "A") as srv:
        url = srv.url
    with pytest.raises(EndpointError, match="fix"):
        ChatClient(url, "j", retries=0, timeout_s=2).complete("q")
