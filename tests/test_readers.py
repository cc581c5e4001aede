"""Readers: every format, every reason code (located), skip-mode accounting, column_map, Parquet, round trips."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sftpipe.conversation import Conversation, Message, Source
from sftpipe.errors import RecordError
from sftpipe.io import write_jsonl
from sftpipe.readers import (file_lines, iter_records, jsonl_rows, parquet_rows, parse_record, raw_rows,
                             read_conversations, read_rows)

DATA = Path(__file__).parent / "assets" / "data"
MIXED = DATA / "mixed_bad.jsonl"

# mixed_bad.jsonl: line -> (reason, message index, field); line 1 is valid and line 3 is blank.
MIXED_EXPECTED = {
    2: ("parse", None, None),
    4: ("invalid_utf8", None, None),
    5: ("not_object", None, None),
    6: ("unknown_format", None, None),
    7: ("unknown_role", 1, "role"),
    8: ("unknown_role", 1, "from"),
    9: ("bad_content", 0, "content"),
    10: ("empty_content", 1, "content"),
    11: ("system_not_first", 1, "role"),
    12: ("no_assistant", None, "messages"),
    13: ("missing_field", 1, "content"),
    14: ("bad_type", 1, "train"),
    15: ("no_messages", None, "messages"),
    16: ("train_on_non_assistant", 0, "train"),
}


def roles(conv: Conversation) -> list[str]:
    return [m.role for m in conv.messages]


def error(obj, **kw) -> RecordError:
    with pytest.raises(RecordError) as info:
        parse_record(obj, **kw)
    return info.value


# --- the four formats ---------------------------------------------------------------------------------------------

def test_openai_asset_content_parts_tools_train_and_meta():
    convs = list(iter_records(DATA / "openai.jsonl"))
    assert all(isinstance(c, Conversation) for c in convs)
    first, parts, tools = convs
    assert roles(first) == ["system", "user", "assistant"]
    assert first.messages[2].content == "It ships tomorrow. 📦"
    assert first.meta == {"id": "o1", "category": "refund"}
    assert first.source == Source(str(DATA / "openai.jsonl"), 1)
    assert parts.messages[0].content == "Hello, world"
    assert [m.train for m in parts.messages] == [None, False, None, True]
    call = tools.messages[1]
    assert call.content == "" and call.tool_calls[0]["function"]["name"] == "lookup"
    tool = tools.messages[2]
    assert (tool.role, tool.name, tool.tool_call_id) == ("tool", "lookup", "call_1")
    assert tools.meta == {"id": "o3", "tags": ["tools"]}
    assert tools.source.line == 3


def test_sharegpt_asset_maps_speakers_and_top_level_system():
    s1, s2 = iter_records(DATA / "sharegpt.jsonl")
    assert [(m.role, m.content) for m in s1.messages] == [
        ("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello.")]
    assert s1.meta == {"id": "s1"}
    assert roles(s2) == ["system", "user", "assistant", "tool", "assistant"]
    assert s2.messages[2].content == '{"name": "weather", "arguments": {}}'


def test_alpaca_asset_joins_instruction_and_input():
    a, b, c = iter_records(DATA / "alpaca.jsonl", format="alpaca")
    assert [(m.role, m.content) for m in a.messages] == [("user", "Translate to French.\n\nGood morning"),
                                                         ("assistant", "Bonjour")]
    assert b.messages[0].content == "Name a colour." and b.meta == {"source": "seed"}
    assert [(m.role, m.content) for m in c.messages] == [
        ("system", "You are a calculator."), ("user", "Sum 2 and 3."), ("assistant", "5")]


def test_prompt_completion_asset_string_and_message_forms():
    simple, chat = iter_records(DATA / "prompt_completion.jsonl")
    assert [(m.role, m.content) for m in simple.messages] == [("user", "Capital of France?"), ("assistant", "Paris.")]
    assert roles(chat) == ["system", "user", "assistant", "user", "assistant"]
    # An assistant turn inside the prompt is context: not trained unless the record says so.
    assert [m.train for m in chat.messages] == [None, None, False, None, None]
    assert chat.meta == {"id": 2}


def test_prompt_completion_error_index_counts_across_prompt_then_completion():
    e = error({"prompt": [{"role": "user", "content": "q"}], "completion": [{"role": "assistant", "content": 5}]})
    assert (e.reason, e.index, e.field) == ("bad_content", 1, "content")


def test_auto_detects_each_format_like_the_explicit_one():
    for name, fmt in [("openai", "openai"), ("sharegpt", "sharegpt"), ("alpaca", "alpaca"),
                      ("prompt_completion", "prompt_completion")]:
        auto = list(iter_records(DATA / f"{name}.jsonl"))
        explicit = list(iter_records(DATA / f"{name}.jsonl", format=fmt))
        assert auto == explicit and all(isinstance(c, Conversation) for c in auto)


def test_explicit_format_that_does_not_match_reports_the_missing_field():
    e = error({"instruction": "x", "output": "y"}, format="openai")
    assert e.reason == "missing_field" and "'messages'" in str(e) and "'instruction'" in str(e)


# --- every reason code, located ---------------------------------------------------------------------------------

def test_mixed_bad_file_yields_one_located_error_per_line():
    out = list(iter_records(MIXED))
    assert isinstance(out[0], Conversation) and out[0].source.line == 1
    errors = out[1:]
    assert all(isinstance(e, RecordError) for e in errors)
    got = {e.line: (e.reason, e.index, e.field) for e in errors}
    assert got == MIXED_EXPECTED


@pytest.mark.parametrize("line", sorted(MIXED_EXPECTED))
def test_error_string_names_file_line_message_and_field(line):
    err = next(e for e in iter_records(MIXED) if isinstance(e, RecordError) and e.line == line)
    text = str(err)
    assert text.startswith(f"{MIXED}:{line}: ")
    _, index, field = MIXED_EXPECTED[line]
    if index is not None:
        assert f"message {index}" in text
    if field is not None:
        assert f"field '{field}'" in text
    assert "Fix: " in text


def test_parse_error_gives_json_position():
    err = next(e for e in iter_records(MIXED) if isinstance(e, RecordError) and e.reason == "parse")
    raw = MIXED.read_bytes().split(b"\n")[1].decode()
    with pytest.raises(json.JSONDecodeError) as ref:
        json.loads(raw)
    assert f"column {ref.value.colno} (char {ref.value.pos})" in err.message


def test_invalid_utf8_gives_byte_offsets_in_line_and_file():
    err = next(e for e in iter_records(MIXED) if isinstance(e, RecordError) and e.reason == "invalid_utf8")
    data = MIXED.read_bytes()
    line_start = sum(len(x) + 1 for x in data.split(b"\n")[:3])
    bad = data.index(b"\xe9")
    assert f"byte {bad - line_start} of the line (byte {bad} of the file)" in err.message


def test_unknown_format_names_keys_seen_and_expected():
    e = error({"question": "q", "answer": "a"})
    assert e.reason == "unknown_format"
    for key in ("'question'", "'answer'", "'messages'", "'conversations'", "'instruction'", "'prompt'"):
        assert key in e.message


def test_sharegpt_unknown_speaker_lists_the_allowed_names():
    e = error({"conversations": [{"from": "robot", "value": "hi"}]})
    assert e.reason == "unknown_role" and "'robot'" in e.message and "human" in e.message and "gpt" in e.message


def test_content_part_error_names_the_part_index():
    e = error({"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url"}]},
                            {"role": "assistant", "content": "b"}]})
    assert (e.reason, e.index) == ("bad_content", 0) and "part 1" in e.message and "'image_url'" in e.message


@pytest.mark.parametrize("obj, field", [
    ({"messages": "hello"}, "messages"),
    ({"messages": ["hello"]}, None),
    ({"messages": [{"role": 3, "content": "x"}]}, "role"),
    ({"messages": [{"role": "assistant", "content": "x", "tool_calls": ["f"]}]}, "tool_calls"),
    ({"messages": [{"role": "tool", "content": "x", "name": 7}]}, "name"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "weight": 2}]}, "weight"),
])
def test_bad_types_are_reported_with_their_field(obj, field):
    e = error(obj)
    assert (e.reason, e.field) == ("bad_type", field)


def test_content_of_wrong_type_is_bad_content():
    e = error({"messages": [{"role": "user", "content": {"text": "q"}}, {"role": "assistant", "content": "a"}]})
    assert (e.reason, e.index, e.field) == ("bad_content", 0, "content")


# --- read_conversations: fail and skip --------------------------------------------------------------------------

def test_fail_mode_raises_the_first_error_with_file_and_line():
    with pytest.raises(RecordError) as info:
        read_conversations(MIXED)
    assert info.value.reason == "parse" and str(info.value).startswith(f"{MIXED}:2: ")


def test_skip_mode_counts_add_up_and_each_reject_has_its_reason(tmp_path):
    good = DATA / "alpaca.jsonl"
    res = read_conversations([MIXED, good], on_error="skip")
    n_lines = sum(1 for line in MIXED.read_bytes().split(b"\n") if line.strip())
    n_good = sum(1 for line in good.read_text().splitlines() if line.strip())
    assert res.n_in == n_lines + n_good == len(res.conversations) + len(res.rejects)
    assert len(res.conversations) == 1 + n_good
    assert [(r["line"], r["reason"]) for r in res.rejects] == [(k, v[0]) for k, v in sorted(MIXED_EXPECTED.items())]
    for r in res.rejects:
        assert r["path"] == str(MIXED) and r["error"].startswith(f"{MIXED}:{r['line']}: ")
    by_reason = {r["reason"]: r for r in res.rejects}
    assert by_reason["parse"]["record"].startswith('{"messages"')       # raw text when unparseable
    assert "\\xe9" in by_reason["invalid_utf8"]["record"]               # undecodable byte kept, escaped
    assert by_reason["not_object"]["record"] == ["not", "an", "object"]  # parsed object otherwise
    assert write_jsonl(tmp_path / "rejects.jsonl", res.rejects) == len(res.rejects)  # rejects are JSON-ready


def test_bom_crlf_and_blank_lines_are_valid_input():
    raw = (DATA / "bom_crlf.jsonl").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf") and b"\r\n" in raw  # the fixture really has them
    a, b = read_conversations(DATA / "bom_crlf.jsonl").conversations
    assert (a.meta, a.source.line) == ({"id": 1}, 1)
    assert (b.meta, b.source.line) == ({"id": 2}, 4)  # blank lines 2-3 still count
    assert b.messages[0].content == "Line\r\nbreaks stay" and b.messages[1].content == "ok \u2028 sep"


def test_bad_options_raise_value_error_naming_the_allowed_set(tmp_path):
    with pytest.raises(ValueError, match=r"'\.csv'.*\.jsonl, \.json, \.parquet"):
        read_conversations(tmp_path / "data.csv")
    with pytest.raises(ValueError, match=r"'\.txt'"):
        iter_records(tmp_path / "data.txt")
    with pytest.raises(ValueError, match="allowed: auto, openai"):
        parse_record({}, format="chatml")
    with pytest.raises(ValueError, match="allowed: fail, skip"):
        read_conversations(DATA / "openai.jsonl", on_error="ignore")


# --- column_map, meta, train -------------------------------------------------------------------------------------

def test_column_map_renames_record_and_message_fields():
    cm = {"messages": "dialog", "role": "speaker", "content": "text"}
    conv = parse_record({"dialog": [{"speaker": "user", "text": "q"}, {"speaker": "assistant", "text": "a"}],
                         "lang": "en"}, column_map=cm)
    assert [(m.role, m.content) for m in conv.messages] == [("user", "q"), ("assistant", "a")]
    assert conv.meta == {"lang": "en"}
    conv = parse_record({"question": "2+2?", "answer": "4"}, column_map={"instruction": "question", "output": "answer"})
    assert [m.content for m in conv.messages] == ["2+2?", "4"] and conv.meta == {}


def test_column_map_missing_mapped_field_names_the_entry():
    e = error({"messages": []}, column_map={"messages": "dialog"})
    assert e.reason == "missing_field" and e.field == "dialog" and "column_map: messages -> 'dialog'" in e.message
    e = error({"dialog": [{"role": "user", "text": "q"}]}, column_map={"messages": "dialog", "role": "speaker"})
    assert (e.reason, e.index, e.field) == ("missing_field", 0, "speaker")
    assert "column_map: role -> 'speaker'" in str(e)


def test_column_map_bad_keys_fail_up_front():
    with pytest.raises(ValueError, match=r"'dialogue'.*allowed: .*messages"):
        iter_records(DATA / "openai.jsonl", column_map={"dialogue": "x"})  # at the call, before any row
    with pytest.raises(ValueError, match="column_map values must be non-empty strings; bad entries: role"):
        parse_record({}, column_map={"role": ""})


def test_train_flag_and_openai_weight_set_message_train():
    conv = parse_record({"messages": [{"role": "user", "content": "q"},
                                      {"role": "assistant", "content": "a", "weight": 0},
                                      {"role": "user", "content": "q2"},
                                      {"role": "assistant", "content": "b", "train": True}]})
    assert [m.train for m in conv.messages] == [None, False, None, True]


def test_unknown_message_keys_do_not_change_the_message():
    plain = parse_record({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})
    extra = parse_record({"messages": [{"role": "user", "content": "q", "timestamp": 1},
                                       {"role": "assistant", "content": "a", "refusal": None}]})
    assert plain == extra


# --- parquet -----------------------------------------------------------------------------------------------------

def test_parquet_rows_with_nested_columns_and_nulls(tmp_path):
    user = {"role": "user", "content": "q"}
    rows = [
        {"id": "p1", "messages": [user, {"role": "assistant", "content": "a", "train": True}]},
        {"id": "p2", "messages": [user, {"role": "bot", "content": "a"}]},
        {"id": "p3", "instruction": "Say hi", "output": "hi"},
    ]
    path = tmp_path / "data.parquet"
    # Parquet gives every row every column: absent keys and struct fields come back as None.
    columns = ("id", "messages", "instruction", "output")
    pq.write_table(pa.table({k: [r.get(k) for r in rows] for k in columns}), path)
    res = read_conversations(path, on_error="skip")
    assert res.n_in == 3 and len(res.conversations) == 2
    p1, p3 = res.conversations
    assert p1.source == Source(str(path), 1) and [m.train for m in p1.messages] == [None, True]
    assert p3.source.line == 3 and [m.content for m in p3.messages] == ["Say hi", "hi"]
    assert p3.meta == {"id": "p3", "messages": None}  # the unused column travels along, even when null
    (reject,) = res.rejects
    assert (reject["reason"], reject["line"]) == ("unknown_role", 2) and reject["record"]["id"] == "p2"


def test_part_of_a_file_reads_as_in_the_whole_file(tmp_path):
    """read_rows over some of a file's lines or row groups (a shard) gives those rows as a whole-file read does."""
    lines = [json.dumps({"instruction": f"q{i}", "output": f"a{i}"}) for i in range(9)]
    path = tmp_path / "d.jsonl"
    path.write_text("\ufeff" + "\n".join(lines[:4] + ["", "{bad"] + lines[4:]) + "\n", encoding="utf-8")
    whole = [(obj, str(out)) for obj, out in read_rows(path, raw_rows(path), format="alpaca")]
    part = [(obj, str(out)) for obj, out in read_rows(path, jsonl_rows(list(file_lines(path))[5:8]), format="alpaca")]
    assert part == whole[4:7] and "d.jsonl:6: invalid JSON" in part[0][1] and whole[0][0] == json.loads(lines[0])
    pq.write_table(pa.Table.from_pylist([json.loads(x) for x in lines]), tmp_path / "d.parquet", row_group_size=2)
    rows = list(parquet_rows(tmp_path / "d.parquet", range(2, 4)))
    assert [n for n, _, _ in rows] == [5, 6, 7, 8] and rows[0][1] == json.loads(lines[4])
    with pytest.raises(ValueError, match="unknown format 'x'"):
        read_rows(path, [], format="x")


def test_a_record_error_survives_pickling():
    import pickle
    e = RecordError("parse", "bad", path="a.jsonl", line=3, index=1, field="role", fix="fix it")
    back = pickle.loads(pickle.dumps(e))
    assert type(back) is RecordError and back.to_dict() == e.to_dict() and str(back) == str(e)


def test_unreadable_parquet_is_a_value_error_naming_the_file(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"not parquet")
    with pytest.raises(ValueError, match="broken.parquet: cannot read as Parquet"):
        read_conversations(path)


# --- round trip property -----------------------------------------------------------------------------------------

TRICKY = ["<|im_end|>", "<|im_start|>assistant\n", "</s>", "e\u0301", "👩‍👩‍👧", "\u2028", "\u0085", "\r\n", "\t",
          " ", "\x00", "\ufeff", '"', "\\"]
text = st.lists(st.one_of(st.text(min_size=1), st.sampled_from(TRICKY)), min_size=1, max_size=6).map("".join)
content = text.filter(lambda s: s.strip())


@st.composite
def conversations(draw) -> Conversation:
    msgs = [Message("system", draw(content))] if draw(st.booleans()) else []
    for _ in range(draw(st.integers(1, 3))):
        msgs.append(Message("user", draw(content)))
        msgs.append(Message("assistant", draw(content), train=draw(st.sampled_from([None, True, False]))))
    meta = draw(st.dictionaries(text.filter(lambda k: k != "messages"),
                                st.one_of(st.integers(), text, st.booleans(), st.none()), max_size=3))
    return Conversation(msgs, meta)


@settings(max_examples=60, deadline=None)
@given(st.lists(conversations(), min_size=1, max_size=4))
def test_jsonl_round_trip_preserves_conversations(tmp_path_factory, convs):
    path = tmp_path_factory.mktemp("rt") / "data.jsonl"
    write_jsonl(path, (c.to_record() for c in convs))
    back = read_conversations(path).conversations
    assert [(c.messages, c.meta) for c in back] == [(c.messages, c.meta) for c in convs]
    assert [c.source.line for c in back] == list(range(1, len(convs) + 1))


# --- reasoning --------------------------------------------------------------------------------------------------

def test_reasoning_content_and_its_alias_thinking_are_read_onto_assistant_messages():
    conv = parse_record({"messages": [{"role": "user", "content": "2+2?"},
                                      {"role": "assistant", "content": "4.", "reasoning_content": "Add."},
                                      {"role": "user", "content": "3+3?"},
                                      {"role": "assistant", "content": "6.", "thinking": "Add again."},
                                      {"role": "user", "content": "ok"},
                                      {"role": "assistant", "content": "Good.", "thinking": "  "}]})
    assert [m.reasoning_content for m in conv.messages[1::2]] == ["Add.", "Add again.", None]  # blank: none
    assert conv.to_record()["messages"][3] == {"role": "assistant", "content": "6.", "reasoning_content": "Add again."}
    mapped = parse_record({"messages": [{"role": "user", "content": "q"},
                                        {"role": "assistant", "content": "a", "cot": "why"}]},
                          column_map={"reasoning_content": "cot"})
    assert mapped.messages[1].reasoning_content == "why"


@pytest.mark.parametrize("extra, reason, field", [
    ({"reasoning_content": "a", "thinking": "b"}, "bad_reasoning", "thinking"),
    ({"reasoning_content": 7}, "bad_type", "reasoning_content"),
])
def test_bad_reasoning_is_reported_with_its_field(extra, reason, field):
    e = error({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", **extra}]})
    assert (e.reason, e.index, e.field) == (reason, 1, field)


def test_reasoning_on_a_user_message_is_rejected():
    e = error({"messages": [{"role": "user", "content": "q", "thinking": "hmm"},
                            {"role": "assistant", "content": "a"}]})
    assert (e.reason, e.index) == ("bad_reasoning", 0)


def test_image_parts_are_out_of_scope_with_a_clear_message():
    e = error({"messages": [{"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                                          {"type": "image_url", "image_url": {"url": "x.png"}}]},
                            {"role": "assistant", "content": "A cat."}]})
    assert (e.reason, e.index) == ("bad_content", 0)
    assert "part 1 is an image ('image_url'); images are out of scope" in e.message and "drop the image" in e.fix
