"""What every curate stage shares: the `Drop` record, the per-record stage base, text keys and the content hash.

A stage is an object with `name`, `stats` (extra counters for the report) and
`apply(convs) -> (kept, dropped)`; records in = kept + dropped. Per-record stages subclass `RecordStage` and only
write `process`; they are pure per record, so they run on any shard in any worker (sftpipe.curate.shard).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..conversation import Conversation, Source


@dataclass
class Drop:
    """A rejected record: the stage and reason that dropped it, plus details (e.g. the id it duplicates)."""

    conversation: Conversation | None
    stage: str
    reason: str
    details: dict[str, Any] = field(default_factory=dict)
    source: Source | None = None  # for records that never became a Conversation (parse errors)
    raw: Any = None  # the raw record or line text of such records

    def to_record(self) -> dict[str, Any]:
        """The JSON line written to rejected.jsonl."""
        src = self.source or (self.conversation.source if self.conversation else None)
        record = self.conversation.to_record() if self.conversation is not None else self.raw
        return {"stage": self.stage, "reason": self.reason, "details": self.details,
                "source": {"path": src.path, "line": src.line} if src else None, "record": record}


Outcome = tuple["Conversation | Drop", "dict[str, int] | None"]


class RecordStage:
    """Base for stages that judge or rewrite one record at a time; subclasses implement `process`."""

    name = "stage"

    def __init__(self, strict: bool = False):
        self.strict = strict
        self.stats: Counter = Counter()

    def process(self, conv: Conversation) -> Outcome:
        """Return (the kept, possibly modified, conversation or a Drop, extra counters or None)."""
        raise NotImplementedError

    def safe_process(self, conv: Conversation) -> Outcome:
        """`process`, but an unexpected exception drops the record with reason `error` (unless strict)."""
        try:
            return self.process(conv)
        except Exception as e:  # one bad record must not stop a run
            if self.strict:
                raise
            return Drop(conv, self.name, "error", {"error": f"{type(e).__name__}: {e}"}), None

    def apply(self, convs: Sequence[Conversation], pool=None, progress=None) -> tuple[list, list[Drop]]:
        """Run `process` over `convs` in this process, in input order (curate's pipeline runs `safe_process`
        inside its shard tasks instead; this is for one list in memory)."""
        kept: list[Conversation] = []
        dropped: list[Drop] = []
        for conv in convs:
            out, extra = self.safe_process(conv)
            if extra:
                self.stats.update(extra)
            (dropped if isinstance(out, Drop) else kept).append(out)
        if progress:
            progress(len(convs))
        return kept, dropped


_WS = re.compile(r"\s+")
_PUNCT = re.compile(r"[^\w\s]")
# ASCII fast path of _PUNCT: punctuation except "_" (a word character) and the control characters that are not space
_ASCII_DROP = {ord(c): None for c in string.punctuation if c != "_"} | \
    dict.fromkeys([*range(0, 9), *range(14, 28), 127])


def norm_text(text: str) -> str:
    """Casefold, drop punctuation, collapse whitespace: the form that dedup and n-gram matching compare.

    >>> norm_text("Where's  my ORDER?\\n")
    'wheres my order'
    """
    text = text.casefold()
    if text.isascii():  # same result, several times faster
        return " ".join(text.translate(_ASCII_DROP).split())
    return _WS.sub(" ", _PUNCT.sub("", text)).strip()


def norm_words(text: str) -> list[str]:
    """`norm_text(text).split()`, without building the joined string.

    >>> norm_words("Where's  my ORDER?")
    ['wheres', 'my', 'order']
    """
    folded = text.casefold()
    if folded.isascii():
        return folded.translate(_ASCII_DROP).split()
    return norm_text(text).split()


def key_text(conv: Conversation, key: str) -> str:
    """The text a record is compared on: its user turns (`prompt`) or every message (`conversation`).

    >>> from sftpipe.conversation import Message
    >>> key_text(Conversation([Message("user", "Hi"), Message("assistant", "Hello")]), "prompt")
    'Hi'
    """
    if key == "prompt":
        msgs = [m for m in conv.messages if m.role == "user"]
    elif key == "conversation":
        msgs = conv.messages
    else:
        raise ValueError(f"unknown key {key!r} (allowed: prompt, conversation)")
    return "\n".join(f"{m.role}: {m.content}" if key == "conversation" else m.content for m in msgs)


def record_id(conv: Conversation, fallback: int | None = None) -> Any:
    """The record's `id` field, else its file:line, else the fallback position."""
    if "id" in conv.meta:
        return conv.meta["id"]
    if conv.source is not None:
        return f"{conv.source.path}:{conv.source.line}"
    return fallback
