"""Eval records -> `EvalItem`s: the serving prompt, the target reply, the category and what to check.

A record's prompt is its messages up to the last assistant message, whose content is the target (for held-out
loss). A record that ends with a user turn is prompt-only: its target is the `reference_key` field, if any.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..checks import lookup
from ..conversation import Conversation, Message
from ..dataset import stratified_indices
from ..errors import ConfigError, RecordError
from ..readers import raw_rows, parse_record
from ..config.evaluate import EvalSetConfig

_PLACEHOLDER_REPLY = "\u2063"  # stands in for a missing target so the reader can validate a prompt-only record


@dataclass
class EvalItem:
    """One eval prompt with everything its checks need."""

    id: str
    set: str
    category: str
    messages: list[Message]  # the prompt, ending with the turn the model answers
    target: str | None  # reference reply (held-out loss, judge context); None for prompt-only without reference
    facts: dict | None = None
    schema: dict | None = None  # JSON Schema the reply's JSON must follow (None: no schema check)
    schema_name: str | None = None
    expected: dict[str, Any] = field(default_factory=dict)  # json field -> expected value (correctness)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def prompt(self) -> list[dict]:
        """The prompt as template messages (what `ChatRenderer.encode_prompt` takes)."""
        return [m.to_template() for m in self.messages]

    def conversation(self) -> Conversation | None:
        """Prompt + target as a Conversation (the held-out loss example), or None without a target."""
        if self.target is None:
            return None
        return Conversation(list(self.messages) + [Message("assistant", self.target)],
                            {"id": self.id, "category": self.category})


def dotted(record: dict, path: str | None) -> Any:
    """The value at a dotted path in a nested dict, or None if the path is empty or any step is missing.

    >>> dotted({"facts": {"refund": {"amount": 5}}}, "facts.refund.amount"), dotted({}, "a.b")
    (5, None)
    """
    return lookup(record, path) if path else None


def resolve_schema(ref: str, schemas: dict[str, str], cache: dict[str, dict]) -> dict:
    """Load a JSON Schema named in `schemas` (or given as a path), once per file."""
    path = schemas.get(ref, ref)
    if path not in cache:
        p = Path(path)
        if not p.is_file():
            raise ConfigError("eval", [f"schema {ref!r}: no file {str(p)!r} (known names: "
                                       f"{', '.join(schemas) or 'none'}); fix: add it to eval.schemas or give a path"])
        cache[path] = json.loads(p.read_text(encoding="utf-8"))
    return cache[path]


def _record_to_item(obj: dict, line: int, cfg: EvalSetConfig, schemas: dict[str, str],
                    cache: dict[str, dict]) -> EvalItem:
    reference = obj.get(cfg.reference_key) if cfg.reference_key else None
    raw_msgs = obj.get("messages")
    prompt_only = isinstance(raw_msgs, list) and raw_msgs and isinstance(raw_msgs[-1], dict) \
        and raw_msgs[-1].get("role") == "user"
    if prompt_only:
        filler = reference if isinstance(reference, str) and reference.strip() else _PLACEHOLDER_REPLY
        obj = {**obj, "messages": raw_msgs + [{"role": "assistant", "content": filler}]}
    conv = parse_record(obj, format=cfg.format)
    last = max(i for i, m in enumerate(conv.messages) if m.role == "assistant")
    target = conv.messages[last].content
    if target == _PLACEHOLDER_REPLY:
        target = None
    meta = conv.meta
    applies = cfg.json_when is None or bool(dotted(meta, cfg.json_when))
    schema_ref = meta.get(cfg.schema_key) or (cfg.schema_name if applies else None)
    expected = meta.get(cfg.expected_key)
    if not isinstance(expected, dict):
        expected = {k: dotted(meta, p) for k, p in cfg.expected.items()} if applies else {}
    category = dotted(meta, cfg.category_key)
    return EvalItem(
        id=str(meta.get("id", f"{cfg.name}:{line}")), set=cfg.name,
        category="(none)" if category is None else str(category),
        messages=list(conv.messages[:last]), target=target,
        facts=dotted(meta, cfg.facts_key), schema=resolve_schema(schema_ref, schemas, cache) if schema_ref else None,
        schema_name=schema_ref, expected={k: v for k, v in expected.items() if v is not None}, meta=meta)


def load_items(cfg: EvalSetConfig, schemas: dict[str, str] | None = None) -> list[EvalItem]:
    """The records of one eval set as items (at most `limit`, stratified by category unless `sample: first`); a bad
    record raises with its file and line."""
    path = Path(cfg.path)
    if not path.is_file():
        raise ConfigError("eval", [f"sets.{cfg.name}.path: no file {cfg.path!r}; fix: point it at a JSONL eval set"])
    items: list[EvalItem] = []
    cache: dict[str, dict] = {}
    for line, obj, err in raw_rows(path):
        if cfg.limit is not None and cfg.sample == "first" and len(items) >= cfg.limit:
            break
        try:
            if err is not None:
                raise err
            items.append(_record_to_item(obj, line, cfg, schemas or {}, cache))
        except RecordError as e:
            raise e.located(str(path), line) from None
    if not items:
        raise ConfigError("eval", [f"sets.{cfg.name}: {cfg.path} holds no records"])
    if cfg.limit is not None and cfg.sample == "stratified":
        keep = set(stratified_indices([it.category for it in items], cfg.limit, cfg.seed))
        items = [it for i, it in enumerate(items) if i in keep]
    return items


def category_counts(paths: list[str], key: str) -> Counter:
    """How often each category (dotted `key`) occurs in JSONL/Parquet files; unreadable rows are skipped."""
    counts: Counter = Counter()
    for path in paths:
        for _, obj, err in raw_rows(path):
            if err is None and isinstance(obj, dict):
                value = dotted(obj, key)
                counts["(none)" if value is None else str(value)] += 1
    return counts
