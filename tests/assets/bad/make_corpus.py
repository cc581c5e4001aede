"""Writes the bad-input corpus next to this file (run once; the files are checked in). expected.yaml says, per
file, the verb, exit code and a substring of the one-line error. Big inputs are generated in the test."""

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).parent
U = {"role": "user", "content": "Where is my parcel?"}
A = {"role": "assistant", "content": "It ships tomorrow."}
GOOD = {"messages": [U, A]}


def line(obj) -> bytes:
    return (json.dumps(obj) + "\n").encode() if not isinstance(obj, bytes) else obj


def msgs(*m, **extra) -> dict:
    return {"messages": list(m), **extra}


JSONL = {
    # name: (bytes of the bad line, expected substring); the bad line is line 2 (line 1 is good)
    "assistant_first": (msgs(A, U, A), "starts with an assistant message"),
    "assistant_first_after_system": (msgs({"role": "system", "content": "Be brief."}, A, U, A),
                                     "message 1, field 'role'"),
    "duplicate_key": (b'{"messages": [], "messages": [{"role": "user", "content": "x"}]}\n',
                      "key 'messages' appears twice"),
    "duplicate_key_in_message": (b'{"messages": [{"role": "user", "role": "assistant", "content": "x"}]}\n',
                                 "key 'role' appears twice"),
    "deep_nesting": (b"[" * 100_000 + b"]" * 100_000 + b"\n", "nested too deeply"),
    "deep_nesting_objects": (b'{"a":' * 50_000 + b"1" + b"}" * 50_000 + b"\n", "nested too deeply"),
    "truncated_json": (b'{"messages": [{"role": "user", "content": "Hi"\n', "invalid JSON"),
    "trailing_garbage": (b'{"messages": []} xyz\n', "invalid JSON"),
    "json_array_line": (b"[1, 2, 3]\n", "not an object"),
    "json_string_line": (b'"just text"\n', "not an object"),
    "json_null_line": (b"null\n", "not an object"),
    "nul_byte": (b'{"messages": [\x00]}\n', "invalid JSON"),
    "invalid_utf8": (b'{"messages": [{"role": "user", "content": "caf\xe9"}]}\n', "invalid UTF-8"),
    "lone_surrogate": (b'{"messages": [{"role": "user", "content": "\xed\xa0\x80"}]}\n', "invalid UTF-8"),
    "unknown_role": (msgs(U, {"role": "robot", "content": "beep"}), "unknown role 'robot'"),
    "role_not_string": (msgs(U, {"role": 3, "content": "x"}), "'role' is int"),
    "missing_role": (msgs(U, {"content": "x"}), "missing field 'role'"),
    "missing_content": (msgs(U, {"role": "assistant"}), "missing field 'content'"),
    "empty_content": (msgs(U, {"role": "assistant", "content": "  "}), "content is empty"),
    "content_number": (msgs(U, {"role": "assistant", "content": 42}), "content is int"),
    "image_part": (msgs({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}, A),
                   "is an image"),
    "audio_part": (msgs({"role": "user", "content": [{"type": "input_audio", "data": "x"}]}, A),
                   "only text parts"),
    "no_assistant": (msgs(U), "no assistant message"),
    "no_messages": (msgs(), "no messages"),
    "messages_not_list": ({"messages": "hello"}, "not a list of messages"),
    "message_not_object": (msgs(U, "hi"), "message is str"),
    "system_not_first": (msgs(U, {"role": "system", "content": "late"}, A), "system message may only come first"),
    "train_on_user": (msgs({**U, "train": True}, A), "'train' is set on a user message"),
    "train_not_bool": (msgs(U, {**A, "train": "yes"}), "expected true or false"),
    "bad_weight": (msgs(U, {**A, "weight": 0.5}), "expected 0 or 1"),
    "reasoning_on_user": (msgs({**U, "reasoning_content": "hmm"}, A), "reasoning_content is set on a user"),
    "tool_calls_not_list": (msgs(U, {"role": "assistant", "content": "", "tool_calls": "call it"}),
                            "'tool_calls' is str"),
    "tool_calls_not_objects": (msgs(U, {"role": "assistant", "content": "", "tool_calls": ["f"]}),
                               "must be a list of objects"),
    "unknown_format": ({"question": "a", "answer": "b"}, "matches no known format"),
    "sharegpt_unknown_speaker": ({"conversations": [{"from": "human", "value": "hi"},
                                                    {"from": "bot", "value": "yo"}]}, "unknown ShareGPT speaker"),
    "alpaca_output_not_text": ({"instruction": "Say hi", "output": {"text": "hi"}}, "content is dict"),
    "prompt_completion_empty": ({"prompt": "Say hi", "completion": ""}, "content is empty"),
    "tool_without_call": (msgs(U, {"role": "tool", "content": "42", "tool_call_id": "c1"}, A),
                          "must answer an assistant's tool call"),
    "tool_first": (msgs({"role": "tool", "content": "42"}, U, A), "message 0, field 'role'"),
    "name_not_string": (msgs(U, {**A, "name": 7}), "'name' is int"),
}
WHOLE = {
    # name: (file bytes, expected substring) for defects of the whole file
    "bom.jsonl": (b"\xef\xbb\xbf" + line(GOOD) + line(msgs(A, U, A)), "x.jsonl:2"),
    "crlf.jsonl": (line(GOOD).replace(b"\n", b"\r\n") + line(msgs(U)).replace(b"\n", b"\r\n"), ":2:"),
    "empty.jsonl": (b"", "no records"),
    "blank_lines_only.jsonl": (b"\n  \n\n", "no records"),
    "not_jsonl.txt": (line(GOOD), "unknown extension"),
    "truncated.parquet": (None, "cannot read as Parquet"),
    "not_parquet.parquet": (b"PAR1 this is not parquet", "cannot read as Parquet"),
}


def main() -> None:
    expected = []
    for name, (bad, substring) in JSONL.items():
        (HERE / f"{name}.jsonl").write_bytes(line(GOOD) + line(bad))
        expected.append({"file": f"{name}.jsonl", "verb": "render", "exit": 1,
                         "expect": [f"{name}.jsonl:2", substring, "Fix:"]})
    for name, (data, substring) in WHOLE.items():
        if data is None:
            buf = pa.BufferOutputStream()
            pq.write_table(pa.table({"messages": [GOOD["messages"]] * 50}), buf)
            data = buf.getvalue().to_pybytes()[:-40]
        (HERE / name).write_bytes(data)
        expect = [substring.replace("x.jsonl", name)]
        code = 2 if substring in ("no records", "unknown extension", "cannot read as Parquet") else 1
        expected.append({"file": name, "verb": "render", "exit": code, "expect": expect})
    schema = pa.table({"id": [1, 2], "messages": ["not a list", "either"]})
    pq.write_table(schema, HERE / "wrong_schema.parquet")
    expected.append({"file": "wrong_schema.parquet", "verb": "render", "exit": 1,
                     "expect": ["wrong_schema.parquet:1", "not a list of messages"]})
    pq.write_table(pa.table({"messages": [[A, U, A]]}), HERE / "assistant_first.parquet")
    expected.append({"file": "assistant_first.parquet", "verb": "render", "exit": 1,
                     "expect": ["assistant_first.parquet:1", "starts with an assistant message"]})
    import yaml

    (HERE / "expected.yaml").write_text(yaml.safe_dump(expected, sort_keys=False, width=200))


if __name__ == "__main__":
    main()
