"""Readers: raw JSONL / Parquet records (OpenAI messages, ShareGPT, Alpaca, prompt-completion) -> `Conversation`s.

Every record is built and validated here, once. A bad record becomes a `RecordError` with a stable `reason`,
the file, the 1-based line (or Parquet row), the message index and the field, plus a fix.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from .conversation import Conversation, Message, Source, validate_messages
from .errors import RecordError

FORMATS = ("auto", "openai", "sharegpt", "alpaca", "prompt_completion")
# Top-level keys each format reads (the rest travel in `Conversation.meta`); auto-detection needs `_DETECT` keys.
_TOP_KEYS = {
    "openai": ("messages",),
    "sharegpt": ("conversations", "system"),
    "alpaca": ("instruction", "input", "output", "system"),
    "prompt_completion": ("prompt", "completion"),
}
_DETECT = (("openai", ("messages",)), ("sharegpt", ("conversations",)), ("alpaca", ("instruction", "output")),
           ("prompt_completion", ("prompt", "completion")))
_MESSAGE_KEYS = ("role", "content", "from", "value", "tool_calls", "name", "tool_call_id", "train", "weight",
                 "reasoning_content", "thinking")
_IMAGE_PARTS = ("image", "image_url", "input_image")
CANONICAL_KEYS = tuple(dict.fromkeys(k for keys in _TOP_KEYS.values() for k in keys)) + _MESSAGE_KEYS
# ShareGPT speaker names (incl. LLaMA-Factory's tool turns) -> roles. A function_call turn is the assistant's
# tool call written as text; an observation is the tool's answer.
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "chatgpt": "assistant", "function_call": "assistant", "tool": "tool", "observation": "tool",
                  "function": "tool"}
SUFFIXES = (".jsonl", ".json", ".parquet")
_BOM = b"\xef\xbb\xbf"


def _check_options(format: str, column_map: dict[str, str] | None) -> dict[str, str]:
    """Validate `format` and `column_map` up front (ValueError); return the column map (empty if None)."""
    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r} (allowed: {', '.join(FORMATS)})")
    cm = dict(column_map or {})
    bad = sorted(k for k in cm if k not in CANONICAL_KEYS)
    if bad:
        raise ValueError(f"column_map has unknown key(s) {', '.join(map(repr, bad))}; keys are sftpipe's names "
                         f"(allowed: {', '.join(CANONICAL_KEYS)}) and values are your file's column names")
    wrong = sorted(k for k, v in cm.items() if not isinstance(v, str) or not v)
    if wrong:
        raise ValueError(f"column_map values must be non-empty strings; bad entries: {', '.join(wrong)}")
    return cm


def _missing(key: str, cm: dict[str, str], present: Any, index: int | None = None) -> RecordError:
    """A missing_field error naming the file's field name and, when mapped, the column_map entry."""
    name = cm.get(key, key)
    via = f" (column_map: {key} -> {name!r})" if key in cm else ""
    seen = ", ".join(map(repr, list(present)[:12])) or "none"
    return RecordError("missing_field", f"missing field {name!r}{via}; fields present: {seen}", index=index,
                       field=name, fix=f"add {name!r}, or map your field with column_map={{{key!r}: 'your_name'}}")


def _get(d: dict, key: str, cm: dict[str, str], index: int | None = None, required: bool = True) -> Any:
    """The value of canonical `key` in `d` (via the column map); None counts as absent."""
    value = d.get(cm.get(key, key))
    if value is None and required:
        raise _missing(key, cm, d.keys(), index)
    return value


def _text(value: Any, field: str, index: int | None) -> str:
    """Content as a string: a string, None (-> "") or a list of text parts joined with "".

    >>> _text([{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}], "content", 0)
    'Hi there'
    """
    if value is None or isinstance(value, str):
        return value or ""
    if not isinstance(value, list):
        raise RecordError("bad_content", f"content is {type(value).__name__}, not a string or a list of text parts",
                          index=index, field=field, fix="give the content as a string")
    out = []
    for j, part in enumerate(value):
        kind = part.get("type") if isinstance(part, dict) else type(part).__name__
        if kind in _IMAGE_PARTS:
            raise RecordError("bad_content", f"content part {j} is an image ({kind!r}); images are out of scope: "
                              "sftpipe trains on text, also with image-capable templates (SmolVLM, Idefics3), "
                              "which get text parts", index=index, field=field,
                              fix="drop the image parts (keep the text parts) or drop the record")
        if kind != "text" or not isinstance(part.get("text"), str):
            raise RecordError("bad_content", f"content part {j} is {kind!r}; only text parts "
                              "({'type': 'text', 'text': ...}) are supported", index=index, field=field,
                              fix="drop non-text parts (images, audio) before training a text model")
        out.append(part["text"])
    return "".join(out)


def _typed(value: Any, types: type | tuple, what: str, field: str, index: int | None) -> Any:
    """Return `value` if it is None or of `types`, else raise a bad_type error."""
    if value is None or isinstance(value, types):
        return value
    raise RecordError("bad_type", f"{field!r} is {type(value).__name__} {value!r:.60}, expected {what}",
                      index=index, field=field, fix=f"make {field!r} {what}, or remove it")


def _train_flag(d: dict, cm: dict[str, str], i: int) -> bool | None:
    """Per-message `train` (bool), or OpenAI fine-tuning's `weight` (0 or 1) when `train` is absent."""
    train = _typed(_get(d, "train", cm, i, False), bool, "true or false", cm.get("train", "train"), i)
    weight = _get(d, "weight", cm, i, False)
    if train is None and weight is not None:
        if isinstance(weight, bool) or weight not in (0, 1):
            raise RecordError("bad_type", f"weight is {weight!r}, expected 0 or 1", index=i,
                              field=cm.get("weight", "weight"), fix="use weight 0 (don't train) or 1 (train)")
        train = bool(weight)
    return train


def _reasoning(d: dict, cm: dict[str, str], i: int) -> str | None:
    """An assistant's reasoning from `reasoning_content` or its alias `thinking` (None when absent or blank)."""
    values = {}
    for key in ("reasoning_content", "thinking"):
        value = _typed(_get(d, key, cm, i, False), str, "a string", cm.get(key, key), i)
        if value is not None and value.strip():
            values[key] = value
    if len(set(values.values())) > 1:
        raise RecordError("bad_reasoning", "reasoning_content and thinking differ", index=i,
                          field=cm.get("thinking", "thinking"), fix="keep one of the two keys")
    return next(iter(values.values()), None)


def _message(d: Any, i: int, cm: dict[str, str], sharegpt: bool = False) -> Message:
    """One message dict (OpenAI `role`/`content` or ShareGPT `from`/`value`) -> Message, at conversation index i."""
    if not isinstance(d, dict):
        raise RecordError("bad_type", f"message is {type(d).__name__}, not an object", index=i, field=None,
                          fix="give each message as an object with role and content")
    role_key, content_key = ("from", "value") if sharegpt else ("role", "content")
    role = _typed(_get(d, role_key, cm, i), str, "a string", cm.get(role_key, role_key), i)
    if sharegpt:
        if role not in SHAREGPT_ROLES:
            raise RecordError("unknown_role", f"unknown ShareGPT speaker {role!r} (allowed: "
                              f"{', '.join(SHAREGPT_ROLES)})", index=i, field=cm.get("from", "from"),
                              fix="rename the speaker to a known one")
        role = SHAREGPT_ROLES[role]
    calls_field = cm.get("tool_calls", "tool_calls")
    tool_calls = _typed(_get(d, "tool_calls", cm, i, False), list, "a list of objects", calls_field, i)
    if tool_calls and not all(isinstance(c, dict) for c in tool_calls):
        raise RecordError("bad_type", f"{calls_field!r} must be a list of objects", index=i, field=calls_field,
                          fix="give each call as {'type': 'function', 'function': {'name': ..., 'arguments': ...}}")
    content_field = cm.get(content_key, content_key)
    content = d.get(content_field)
    if content is None and content_field not in d and not tool_calls:
        raise _missing(content_key, cm, d.keys(), i)
    return Message(
        role=role,
        content=_text(content, content_field, i),
        train=_train_flag(d, cm, i),
        tool_calls=tuple(dict(c) for c in tool_calls) if tool_calls else None,
        name=_typed(_get(d, "name", cm, i, False), str, "a string", cm.get("name", "name"), i),
        tool_call_id=_typed(_get(d, "tool_call_id", cm, i, False), str, "a string",
                            cm.get("tool_call_id", "tool_call_id"), i),
        reasoning_content=_reasoning(d, cm, i),
    )


def _message_list(value: Any, key: str, cm: dict[str, str], offset: int = 0, sharegpt: bool = False) -> list[Message]:
    """A list of message dicts -> Messages; indexes in errors count from `offset`."""
    if not isinstance(value, list):
        raise RecordError("bad_type", f"{cm.get(key, key)!r} is {type(value).__name__}, not a list of messages",
                          field=cm.get(key, key), fix="give the messages as a JSON list of objects")
    return [_message(d, offset + i, cm, sharegpt) for i, d in enumerate(value)]


def _system(obj: dict, cm: dict[str, str]) -> list[Message]:
    """An optional top-level system prompt as a leading message; blank means none."""
    text = _text(_get(obj, "system", cm, required=False), cm.get("system", "system"), None)
    return [Message("system", text)] if text.strip() else []


def _openai(obj: dict, cm: dict[str, str]) -> list[Message]:
    return _message_list(_get(obj, "messages", cm), "messages", cm)


def _sharegpt(obj: dict, cm: dict[str, str]) -> list[Message]:
    system = _system(obj, cm)
    return system + _message_list(_get(obj, "conversations", cm), "conversations", cm, len(system), sharegpt=True)


def _alpaca(obj: dict, cm: dict[str, str]) -> list[Message]:
    """{"instruction", "input", "output", "system"} -> [system], user (instruction + blank line + input), assistant."""
    system = _system(obj, cm)
    n = len(system)
    instruction = _text(_get(obj, "instruction", cm), cm.get("instruction", "instruction"), n)
    extra = _text(_get(obj, "input", cm, required=False), cm.get("input", "input"), n)
    output = _text(_get(obj, "output", cm), cm.get("output", "output"), n + 1)
    user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    return system + [Message("user", user), Message("assistant", output)]


def _prompt_completion(obj: dict, cm: dict[str, str]) -> list[Message]:
    """Prompt (string -> user message, or messages) + completion (string -> assistant message, or messages).

    Assistant turns inside the prompt are context, so they get train=False unless they say otherwise.
    """
    prompt, completion = _get(obj, "prompt", cm), _get(obj, "completion", cm)
    if isinstance(prompt, list):
        msgs = _message_list(prompt, "prompt", cm)
        msgs = [replace(m, train=False) if m.role == "assistant" and m.train is None else m for m in msgs]
    else:
        msgs = [Message("user", _text(prompt, cm.get("prompt", "prompt"), 0))]
    if isinstance(completion, list):
        return msgs + _message_list(completion, "completion", cm, len(msgs))
    return msgs + [Message("assistant", _text(completion, cm.get("completion", "completion"), len(msgs)))]


_BUILDERS = {"openai": _openai, "sharegpt": _sharegpt, "alpaca": _alpaca, "prompt_completion": _prompt_completion}


def _detect(obj: dict, cm: dict[str, str]) -> str:
    """The format whose keys (after column_map) the record has; errors name the keys seen and expected."""
    for fmt, keys in _DETECT:
        if all(obj.get(cm.get(k, k)) is not None for k in keys):
            return fmt
    # A column_map that names one format's keys says which format was meant: report the missing key.
    meant = {fmt for fmt, keys in _DETECT for k in keys if k in cm}
    if len(meant) == 1:
        fmt = meant.pop()
        key = next(k for k in dict(_DETECT)[fmt] if obj.get(cm.get(k, k)) is None)
        raise _missing(key, cm, obj.keys())
    expected = "; ".join(f"{fmt}: {' + '.join(repr(cm.get(k, k)) for k in keys)}" for fmt, keys in _DETECT)
    seen = ", ".join(map(repr, list(obj)[:12])) or "none"
    raise RecordError("unknown_format", f"record matches no known format; fields seen: {seen}; expected ({expected})",
                      fix="pass format= and column_map= (e.g. {'messages': 'dialog'}) to name your fields")


def _parse(obj: Any, format: str, cm: dict[str, str]) -> Conversation:
    if not isinstance(obj, dict):
        raise RecordError("not_object", f"record is a JSON {type(obj).__name__}, not an object",
                          fix="write one JSON object per line, e.g. {\"messages\": [...]}")
    fmt = _detect(obj, cm) if format == "auto" else format
    messages = _BUILDERS[fmt](obj, cm)
    validate_messages(messages)
    used = {cm.get(k, k) for k in _TOP_KEYS[fmt]}
    return Conversation(messages, {k: v for k, v in obj.items() if k not in used})


def parse_record(obj: dict, *, format: str = "auto", column_map: dict[str, str] | None = None) -> Conversation:
    """Build and validate one record; raise `RecordError` (without path/line: the caller adds them).

    >>> parse_record({"id": 7, "instruction": "Hi", "output": "Hello!"}).to_record()
    {'id': 7, 'messages': [{'role': 'user', 'content': 'Hi'}, {'role': 'assistant', 'content': 'Hello!'}]}
    """
    return _parse(obj, format, _check_options(format, column_map))


class _DuplicateKey(ValueError):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    """json object hook: a dict, or _DuplicateKey when a key repeats.

    >>> _unique_keys([("a", 1), ("b", 2)])
    {'a': 1, 'b': 2}
    """
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        raise _DuplicateKey(next(k for k, _ in pairs if k in seen or seen.add(k)))
    return out


def file_lines(path: str | Path) -> Iterator[tuple[int, int, bytes]]:
    """(1-based line, byte offset, raw bytes with the line end) per line of a file, split on b"\\n"."""
    offset = 0
    with open(path, "rb") as f:
        for n, raw in enumerate(f, start=1):
            yield n, offset, raw
            offset += len(raw)


def jsonl_rows(lines: Iterable[tuple[int, int, bytes]]) -> Iterator[tuple[int, Any, RecordError | None]]:
    """(line, parsed object or raw text, error) per non-blank line of `file_lines` triples (or any part of them).

    >>> [(n, obj) for n, obj, _ in jsonl_rows([(7, 40, b'{"a": 1}\\r\\n'), (8, 50, b"\\n")])]
    [(7, {'a': 1})]
    """
    for n, start, raw in lines:
        if start == 0 and raw.startswith(_BOM):
            raw, start = raw[len(_BOM):], start + len(_BOM)
        try:
            text = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as e:
            yield n, raw.decode("utf-8", "backslashreplace").rstrip("\r\n"), RecordError(
                "invalid_utf8", f"invalid UTF-8 at byte {e.start} of the line (byte {start + e.start} of the "
                f"file): {raw[e.start:e.start + 4]!r}", fix="re-export the file as UTF-8")
            continue
        if not text.strip():
            continue
        try:
            yield n, json.loads(text, object_pairs_hook=_unique_keys), None
        except _DuplicateKey as e:
            yield n, text, RecordError(
                "duplicate_key", f"key {e.key!r} appears twice in one JSON object", field=e.key,
                fix="keep one value per key (a JSON reader would silently keep the last)")
        except RecursionError:
            yield n, text[:200], RecordError(
                "too_deep", "JSON nested too deeply to read", fix="flatten the record; messages need a "
                "few levels of nesting, not thousands")
        except json.JSONDecodeError as e:
            yield n, text, RecordError(
                "parse", f"invalid JSON: {e.msg.removesuffix(' at')} at column {e.colno} (char {e.pos})",
                fix="each line must hold one complete JSON object (JSON Lines; a JSON array file must be "
                    "converted)")


def parquet_rows(path: str | Path, row_groups: range | None = None) -> Iterator[tuple[int, Any, RecordError | None]]:
    """(1-based row of the file, row dict, None) per Parquet row of `row_groups` (default: all); nested columns
    come as lists/dicts."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise ValueError(f"{path}: cannot read as Parquet: {e}; fix: re-export the file (it may be truncated) or "
                         "convert it to JSON Lines") from e
    groups = range(pf.num_row_groups) if row_groups is None else row_groups
    n = sum(pf.metadata.row_group(g).num_rows for g in range(groups.start))
    for batch in pf.iter_batches(batch_size=1024, row_groups=list(groups)):
        for row in batch.to_pylist():
            n += 1
            yield n, row, None


def raw_rows(path: str | Path) -> Iterator[tuple[int, Any, RecordError | None]]:
    """(line or row number, parsed object, parse error or None) for each raw row of a JSONL or Parquet file."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in (".jsonl", ".json"):
        return jsonl_rows(file_lines(p))
    if suffix == ".parquet":
        return parquet_rows(p)
    raise ValueError(f"cannot read {str(path)!r}: unknown extension {suffix!r} (supported: {', '.join(SUFFIXES)}). "
                     "Fix: rename the file or convert it to JSON Lines")


def _convert(path: str, line: int, obj: Any, err: RecordError | None, format: str,
             cm: dict[str, str]) -> Conversation | RecordError:
    """A row -> a Conversation with its source, or the row's RecordError located at path:line."""
    if err is None:
        try:
            conv = _parse(obj, format, cm)
        except RecordError as e:
            err = e
        else:
            conv.source = Source(path, line)
            return conv
    return err.located(path, line)


def read_rows(path: str | Path, rows: Iterable[tuple[int, Any, RecordError | None]], *, format: str = "auto",
              column_map: dict[str, str] | None = None) -> Iterator[tuple[Any, Conversation | RecordError]]:
    """(raw object, Conversation or RecordError located at path:line) per row of `rows` (from `raw_rows(path)` or
    a part of the file, e.g. one shard). Options are checked at the call (ValueError)."""
    cm = _check_options(format, column_map)
    return ((obj, _convert(str(path), line, obj, err, format, cm)) for line, obj, err in rows)


def iter_records(path: str | Path, *, format: str = "auto",
                 column_map: dict[str, str] | None = None) -> Iterator[Conversation | RecordError]:
    """Yield, in file order, a Conversation or a located RecordError for every non-blank line / row.

    Options and the file extension are checked at the call (ValueError), not at the first `next()`.
    """
    rows = read_rows(path, raw_rows(path), format=format, column_map=column_map)
    return (out for _, out in rows)


@dataclass
class ReadResult:
    """What a read produced: kept conversations, rejected rows (with reason) and the count of rows read."""

    conversations: list[Conversation] = field(default_factory=list)
    rejects: list[dict] = field(default_factory=list)
    n_in: int = 0


def stream_conversations(paths: str | Path | list, result: ReadResult, *, format: str = "auto",
                         column_map: dict[str, str] | None = None,
                         on_error: Literal["fail", "skip"] = "fail") -> Iterator[Conversation]:
    """`read_conversations` one conversation at a time: the row count and the rejects go to `result` as they
    come, so a caller can render a file of any size in bounded memory."""
    if on_error not in ("fail", "skip"):
        raise ValueError(f"unknown on_error {on_error!r} (allowed: fail, skip)")
    _check_options(format, column_map)
    for path in [paths] if isinstance(paths, (str, Path)) else list(paths):
        for obj, out in read_rows(path, raw_rows(path), format=format, column_map=column_map):
            result.n_in += 1
            if isinstance(out, Conversation):
                yield out
            elif on_error == "fail":
                raise out
            else:
                result.rejects.append({"reason": out.reason, "error": str(out), "path": out.path,
                                       "line": out.line, "record": obj})


def read_conversations(paths: str | Path | list, *, format: str = "auto", column_map: dict[str, str] | None = None,
                       on_error: Literal["fail", "skip"] = "fail") -> ReadResult:
    """Read one or more files. `fail` raises the first RecordError; `skip` collects it in `rejects`.

    Rejects are {"reason", "error", "path", "line", "record"} where record is the parsed object, or the raw
    line text when it could not be parsed. Always: n_in == len(conversations) + len(rejects).
    """
    result = ReadResult()
    result.conversations = list(stream_conversations(paths, result, format=format, column_map=column_map,
                                                     on_error=on_error))
    assert result.n_in == len(result.conversations) + len(result.rejects)
    return result
