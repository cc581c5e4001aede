"""Preference pairs: records -> `Pair(prompt, chosen, rejected)`, validated at the boundary.

Two record shapes are read (JSONL or Parquet, one pair per line/row):
- TRL's explicit prompt: `prompt` (a string -> one user message, or a message list) with `chosen` and `rejected`
  (a string -> the assistant reply, or a list holding one assistant message);
- two full conversations sharing a prefix: `chosen` and `rejected` message lists, equal up to their last message,
  each ending on an assistant turn (TRL's "implicit prompt" format).

Every bad pair is a `RecordError` with a stable reason and the fix (file:line added by the reader): identical
replies, an empty side, a side that does not end on an assistant turn, prefixes that differ. Whether the prompt's
render is a prefix of both conversations' renders is checked where the template is known (`sftpipe.dpo.encode`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..conversation import Conversation, Message, Source, validate_messages
from ..errors import RecordError
from ..readers import _message_list, raw_rows

FORMATS = ("auto", "prompt_chosen_rejected", "conversations")


@dataclass
class Pair:
    """One preference pair: the shared prompt messages and the two competing assistant replies."""

    prompt: list[Message]
    chosen: Message
    rejected: Message
    meta: dict[str, Any] = field(default_factory=dict)
    source: Source | None = None

    def conversation(self, side: str) -> Conversation:
        """The prompt plus one reply, with only that reply trained (earlier assistant turns are context)."""
        reply = replace(self.chosen if side == "chosen" else self.rejected, train=True)
        context = [replace(m, train=False) if m.role == "assistant" else m for m in self.prompt]
        return Conversation(context + [reply], dict(self.meta), self.source)

    def to_record(self) -> dict[str, Any]:
        """The pair as a TRL prompt/chosen/rejected record with message lists (extra fields kept)."""
        def msgs(ms):
            return [{k: v for k, v in m.to_template().items() if k != "thinking"} for m in ms]
        return {**self.meta, "prompt": msgs(self.prompt), "chosen": msgs([self.chosen]),
                "rejected": msgs([self.rejected])}


def _reply(value: Any, key: str, offset: int) -> Message:
    """A completion side: a string, or a list holding exactly one assistant message."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise RecordError(f"empty_{key}", f"the {key} reply is empty", field=key,
                          fix=f"give a non-empty {key} reply, or drop the pair")
    if isinstance(value, str):
        return Message("assistant", value)
    msgs = _message_list(value, key, {}, offset)
    if not msgs:
        raise RecordError(f"empty_{key}", f"the {key} reply is an empty list", field=key,
                          fix=f"give a non-empty {key} reply, or drop the pair")
    if len(msgs) != 1 or msgs[-1].role != "assistant":
        raise RecordError("not_assistant_last", f"{key} must be one assistant message, got roles "
                          f"{[m.role for m in msgs]}", index=offset + len(msgs) - 1, field=key,
                          fix="put the shared turns in `prompt` and only the competing assistant reply in "
                              f"`{key}`")
    return msgs[0]


def _explicit(obj: dict) -> Pair:
    prompt = obj["prompt"]
    if isinstance(prompt, str):
        if not prompt.strip():
            raise RecordError("empty_prompt", "the prompt is empty", field="prompt", fix="give the user's message")
        msgs = [Message("user", prompt)]
    else:
        msgs = _message_list(prompt, "prompt", {})
    return Pair(msgs, _reply(obj.get("chosen"), "chosen", len(msgs)), _reply(obj.get("rejected"), "rejected",
                                                                              len(msgs)))


def _implicit(obj: dict) -> Pair:
    sides = {}
    for key in ("chosen", "rejected"):
        value = obj.get(key)
        if not value:
            raise RecordError(f"empty_{key}", f"the {key} conversation is empty", field=key,
                              fix=f"give the {key} conversation as a message list ending on an assistant turn")
        msgs = _message_list(value, key, {})
        if msgs[-1].role != "assistant":
            raise RecordError("not_assistant_last", f"the {key} conversation ends on a {msgs[-1].role!r} turn, not "
                              "an assistant reply", index=len(msgs) - 1, field=key,
                              fix="end both conversations on the competing assistant reply")
        sides[key] = msgs
    chosen, rejected = sides["chosen"], sides["rejected"]
    if chosen[:-1] != rejected[:-1]:
        k = next((i for i, (a, b) in enumerate(zip(chosen, rejected)) if a != b), min(len(chosen), len(rejected)) - 1)
        raise RecordError("prefix_differs", "chosen and rejected differ before their last message (at message "
                          f"{k}), so they share no prompt", index=k, field="rejected",
                          fix="make both conversations identical up to the final assistant reply")
    for key, msgs in sides.items():
        if not msgs[-1].content.strip() and not msgs[-1].tool_calls:
            raise RecordError(f"empty_{key}", f"the {key} reply is empty", index=len(msgs) - 1, field=key,
                              fix=f"give a non-empty {key} reply, or drop the pair")
    return Pair(chosen[:-1], chosen[-1], rejected[-1])


def parse_pair(obj: Any, format: str = "auto") -> Pair:
    """One record -> a validated Pair; `RecordError` (without file:line) otherwise.

    >>> p = parse_pair({"prompt": "Hi", "chosen": "Hello!", "rejected": "Greetings, valued customer."})
    >>> [m.role for m in p.prompt], p.chosen.content
    (['user'], 'Hello!')
    """
    if format not in FORMATS:
        raise ValueError(f"format={format!r}; allowed: {', '.join(FORMATS)}")
    if not isinstance(obj, dict):
        raise RecordError("not_object", f"record is a JSON {type(obj).__name__}, not an object",
                          fix='write one JSON object per line: {"prompt": ..., "chosen": ..., "rejected": ...}')
    missing = [k for k in ("chosen", "rejected") if k not in obj]
    if format == "prompt_chosen_rejected" and "prompt" not in obj:
        missing.insert(0, "prompt")
    if missing:
        raise RecordError("missing_field", f"missing field {missing[0]!r}; fields present: "
                          f"{', '.join(map(repr, list(obj)[:12])) or 'none'}", field=missing[0],
                          fix="give prompt/chosen/rejected, or chosen/rejected as two full conversations")
    explicit = format == "prompt_chosen_rejected" or (format == "auto" and "prompt" in obj)
    pair = _explicit(obj) if explicit else _implicit(obj)
    validate_messages(pair.prompt + [pair.chosen])
    validate_messages(pair.prompt + [pair.rejected])
    if pair.prompt and pair.prompt[-1].role == "assistant":
        raise RecordError("prompt_ends_on_assistant", "the prompt ends on an assistant turn, so the replies would "
                          "follow another reply", index=len(pair.prompt) - 1, field="prompt",
                          fix="end the prompt on the user (or tool) turn the replies answer")
    if pair.chosen == pair.rejected:
        raise RecordError("identical_replies", "chosen and rejected are the same reply, so the pair teaches "
                          "nothing", field="rejected", fix="drop the pair, or give a reply that was ranked lower")
    pair.meta = {k: v for k, v in obj.items() if k not in ("prompt", "chosen", "rejected")}
    return pair


def iter_pairs(path: str | Path, format: str = "auto") -> Iterator[Pair | RecordError]:
    """Yield, in file order, a Pair or a RecordError located at file:line for every non-blank line / row."""
    for line, obj, err in raw_rows(path):
        if err is None:
            try:
                pair = parse_pair(obj, format)
            except RecordError as e:
                err = e
            else:
                pair.source = Source(str(path), line)
                yield pair
                continue
        yield err.located(str(path), line)
