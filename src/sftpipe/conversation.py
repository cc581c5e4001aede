"""Typed conversations, validated once at the boundary.

A `Conversation` is a list of `Message`s plus the record's extra fields (`meta`, e.g. `id`, `category`) and
where it came from (`source`). Readers build them; everything downstream trusts them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import RecordError

ROLES = ("system", "user", "assistant", "tool")


@dataclass(frozen=True)
class Source:
    """Where a record came from: a file and a 1-based line (JSONL) or row (Parquet)."""

    path: str
    line: int


@dataclass(frozen=True)
class Message:
    """One chat message. `train` overrides the multi-turn policy for this message (assistant only).

    `reasoning_content` is an assistant's reasoning (the text a reasoning model writes inside its think block),
    kept apart from the reply as transformers and vLLM do; readers also accept the alias `thinking`.
    """

    role: str
    content: str
    train: bool | None = None
    tool_calls: tuple[dict, ...] | None = None
    name: str | None = None
    tool_call_id: str | None = None
    reasoning_content: str | None = None

    def to_template(self) -> dict[str, Any]:
        """The message as the dict a Jinja chat template sees (no sftpipe-only keys, no None values).

        Reasoning goes in under both names templates read: `reasoning_content` (Qwen3, Nemotron) and `thinking`.
        """
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            out["tool_calls"] = [dict(c) for c in self.tool_calls]
        if self.name is not None:
            out["name"] = self.name
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        if self.reasoning_content is not None:
            out["reasoning_content"] = out["thinking"] = self.reasoning_content
        return out


@dataclass
class Conversation:
    """A validated conversation with its extra fields and origin."""

    messages: list[Message]
    meta: dict[str, Any] = field(default_factory=dict)
    source: Source | None = None

    def to_template(self) -> list[dict[str, Any]]:
        """All messages as template dicts."""
        return [m.to_template() for m in self.messages]

    def to_record(self) -> dict[str, Any]:
        """The conversation as an OpenAI-`messages` JSON record, extra fields kept."""
        msgs = []
        for m in self.messages:
            d = m.to_template()
            d.pop("thinking", None)  # written once, as reasoning_content
            if m.train is not None:
                d["train"] = m.train
            msgs.append(d)
        return {**self.meta, "messages": msgs}

    def dialogue_text(self) -> str:
        """Every non-system message's content, role-tagged, as one string: the whole-conversation near-duplicate
        key of curate's split and doctor (a system prompt shared by the whole dataset would make short
        conversations look alike)."""
        return "\n".join(f"{m.role}: {m.content}" for m in self.messages if m.role != "system")

    @property
    def label(self) -> str:
        """A short human name for error messages: the record id if any, else file:line."""
        if "id" in self.meta:
            return f"record id={self.meta['id']!r}"
        if self.source is not None:
            return f"{self.source.path}:{self.source.line}"
        return "record"


def validate_messages(messages: list[Message]) -> None:
    """Raise `RecordError` (with the message index and field) unless `messages` is a trainable conversation.

    Checks: known role, non-empty string content (an assistant message with tool calls may be empty),
    reasoning only on assistant messages and only as a string, a system message only first, no assistant
    message before the first user message, a tool message only after an assistant or tool message, and at
    least one assistant message.
    """
    if not messages:
        raise RecordError("no_messages", "conversation has no messages", field="messages",
                          fix="give at least one user and one assistant message")
    for i, m in enumerate(messages):
        if m.role not in ROLES:
            raise RecordError("unknown_role", f"unknown role {m.role!r} (allowed: {', '.join(ROLES)})",
                              index=i, field="role",
                              fix="rename the role to one of those (ShareGPT data: use format sharegpt)")
        if not isinstance(m.content, str):
            raise RecordError("bad_content", f"content is {type(m.content).__name__}, not a string",
                              index=i, field="content", fix="give the content as a string or a list of text parts")
        if not m.content.strip() and not (m.role == "assistant" and m.tool_calls):
            raise RecordError("empty_content", "content is empty", index=i, field="content",
                              fix="drop the message or the record (curate filters empty replies)")
        if m.role == "system" and i != 0:
            raise RecordError("system_not_first", "a system message may only come first", index=i, field="role",
                              fix="move the system message to the start or merge it into the first one")
        if m.reasoning_content is not None and m.role != "assistant":
            raise RecordError("bad_reasoning", f"reasoning_content is set on a {m.role} message", index=i,
                              field="reasoning_content", fix="only assistant replies carry reasoning; remove it")
        if m.reasoning_content is not None and not isinstance(m.reasoning_content, str):
            raise RecordError("bad_reasoning", f"reasoning_content is {type(m.reasoning_content).__name__}, not a "
                              "string", index=i, field="reasoning_content", fix="give the reasoning as a string")
        if m.role == "tool" and (i == 0 or messages[i - 1].role not in ("assistant", "tool")):
            raise RecordError("tool_without_call", "a tool message must answer an assistant's tool call (follow an "
                              "assistant or tool message)", index=i, field="role",
                              fix="add the assistant message with the tool call before it, or drop the record")
        if m.train is not None and m.role != "assistant":
            raise RecordError("train_on_non_assistant", f"'train' is set on a {m.role} message", index=i,
                              field="train", fix="only assistant messages can be trained; remove the key")
    first = next((i for i, m in enumerate(messages) if m.role != "system"), None)
    if first is not None and messages[first].role == "assistant":
        raise RecordError("assistant_first", "the conversation starts with an assistant message (after any system "
                          "message); templates expect a user turn first", index=first, field="role",
                          fix="add the user message the reply answers, or drop the record")
    if not any(m.role == "assistant" for m in messages):
        raise RecordError("no_assistant", "conversation has no assistant message", field="messages",
                          fix="add the assistant reply, or drop the record")
