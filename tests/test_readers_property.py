"""Property: whatever the file holds (random JSON records, random bytes), the readers never raise for a record;
every non-blank line ends kept or rejected with a reason, and records in = kept + rejected."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sftpipe.conversation import Conversation
from sftpipe.errors import RecordError
from sftpipe.readers import iter_records, read_conversations

KEYS = st.sampled_from(["messages", "role", "content", "from", "value", "conversations", "instruction", "output",
                        "input", "prompt", "completion", "system", "train", "weight", "tool_calls", "name", "type",
                        "text", "image_url", "reasoning_content", "thinking", "id", "x"])
SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8) | \
    st.sampled_from(["user", "assistant", "system", "tool", "human", "gpt", "text", "image"])
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=5),
                    max_leaves=25)
WORDS = st.text(min_size=1, max_size=12).filter(str.strip)
VALID = st.builds(lambda u, a: {"messages": [{"role": "user", "content": u}, {"role": "assistant", "content": a}]},
                  WORDS, WORDS)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _check(path, n_lines: int) -> None:
    result = read_conversations(path, on_error="skip")
    assert result.n_in == n_lines == len(result.conversations) + len(result.rejects)
    assert all(r["reason"] and r["error"] and r["line"] for r in result.rejects)
    streamed = list(iter_records(path))
    assert len(streamed) == n_lines and all(isinstance(x, (Conversation, RecordError)) for x in streamed)
    assert sum(isinstance(x, Conversation) for x in streamed) == len(result.conversations)


@SETTINGS
@given(records=st.lists(VALID | JSON, min_size=1, max_size=6))
def test_random_json_records_are_kept_or_rejected(records, tmp_path_factory):
    path = tmp_path_factory.mktemp("p") / "r.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    _check(path, len(records))
    kept = len(read_conversations(path, on_error="skip").conversations)
    assert kept >= sum(map(_plain_pair, records))  # the well-formed pairs are among the kept


def _plain_pair(r) -> bool:
    """A record as VALID builds it: one user then one assistant message, non-blank string contents."""
    if not (isinstance(r, dict) and r.keys() == {"messages"} and isinstance(r["messages"], list)):
        return False
    ms = r["messages"]
    return len(ms) == 2 and all(isinstance(m, dict) and m.keys() == {"role", "content"}
                                and isinstance(m["content"], str) and m["content"].strip() for m in ms) \
        and [m["role"] for m in ms] == ["user", "assistant"]


@SETTINGS
@given(lines=st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), min_size=1, max_size=6))
def test_random_bytes_are_kept_or_rejected(lines, tmp_path_factory):
    path = tmp_path_factory.mktemp("p") / "r.jsonl"
    path.write_bytes(b"".join(x + b"\n" for x in lines))
    # a line counts when it is not blank (after the BOM on line 1, and decoded); undecodable lines count too
    def counted(i, raw):
        raw = raw[3:] if i == 0 and raw.startswith(b"\xef\xbb\xbf") else raw
        try:
            return bool(raw.decode("utf-8").rstrip("\r").strip())
        except UnicodeDecodeError:
            return True
    _check(path, sum(counted(i, x) for i, x in enumerate(lines)))
