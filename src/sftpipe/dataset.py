"""Conversations -> masked examples within `max_length`, with a mask report that accounts for every record; a
stratified sample of records by category."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from typing import Any
from collections.abc import Callable, Iterable, Iterator


from .config import DataConfig, ModelConfig, RenderConfig, TemplateConfig
from .conversation import Conversation
from .errors import ConfigError, RecordError
from .io import require_files
from .gcpause import no_cyclic_gc
from .models import load_tokenizer
from .readers import read_conversations
from .render import ChatRenderer, Example
from .templates import load_template

# A progress hook: called with (label, total), returns the function that advances it by n.
Tracker = Callable[[str, int], Callable[[int], None]]

TRUNCATION = ("drop", "drop_oldest_turns", "truncate")


@dataclass
class MaskReport:
    """What rendering did to a dataset: sizes, trained share, truncation and drops with reasons."""

    conversations_in: int = 0
    conversations_kept: int = 0
    examples: int = 0
    tokens: int = 0
    trained_tokens: int = 0
    trained_messages: int = 0
    eot_trained: int = 0
    truncated: int = 0
    truncation_policy: str = "drop"
    max_length: int = 0
    history_rewrite_splits: int = 0
    boundary_tokens: int = 0
    escaped_control_examples: int = 0
    rejected: dict[str, int] = field(default_factory=dict)

    @property
    def trained_share(self) -> float:
        return self.trained_tokens / self.tokens if self.tokens else 0.0

    @property
    def eot_coverage(self) -> float:
        """Share of trained assistant messages whose end-of-turn token is trained (1.0 unless truncated)."""
        return self.eot_trained / self.trained_messages if self.trained_messages else 0.0

    def add(self, other: MaskReport) -> None:
        """Add the counts of `other` (a report on another chunk of the same dataset) to this one."""
        for name, value in vars(other).items():
            if isinstance(value, int) and name != "max_length":
                setattr(self, name, getattr(self, name) + value)
        self.rejected = dict(Counter(self.rejected) + Counter(other.rejected))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "trained_share": round(self.trained_share, 6),
                "eot_coverage": round(self.eot_coverage, 6)}


def drop_oldest_turn(conv: Conversation) -> Conversation | None:
    """Remove the oldest exchange after any system message (up to the next user message); None if none is left.

    >>> from sftpipe.conversation import Message
    >>> c = Conversation([Message("user", "a"), Message("assistant", "b"), Message("user", "c"),
    ...                   Message("assistant", "d")])
    >>> [m.content for m in drop_oldest_turn(c).messages]
    ['c', 'd']
    """
    msgs = conv.messages
    head = 1 if msgs and msgs[0].role == "system" else 0
    nxt = next((j for j in range(head + 1, len(msgs)) if msgs[j].role == "user"), None)
    if nxt is None:
        return None
    return replace(conv, messages=msgs[:head] + msgs[nxt:])


def _fit(renderer: ChatRenderer, conv: Conversation, examples: list[Example], max_length: int, policy: str
         ) -> tuple[list[Example], bool]:
    """Make `conv`'s examples fit in `max_length` under `policy`; returns (examples, truncated)."""
    truncated = False
    if policy == "drop_oldest_turns":
        while any(len(e.input_ids) > max_length for e in examples):
            shorter = drop_oldest_turn(conv)
            if shorter is None or not renderer._trained_indices(shorter):
                break
            conv, truncated = shorter, True
            examples = renderer.render(conv)
    elif policy == "truncate":
        for i, e in enumerate(examples):
            if len(e.input_ids) > max_length:
                examples[i] = replace(e, input_ids=e.input_ids[:max_length], labels=e.labels[:max_length])
                truncated = True
        examples = [e for e in examples if e.n_trained > 0]
        if not examples:
            raise RecordError("no_trained_tokens_after_truncation", f"{conv.label}: truncation to {max_length} "
                              "tokens leaves no trained token", fix="raise max_length or use truncation: drop")
    too_long = [e for e in examples if len(e.input_ids) > max_length]
    if too_long:
        raise RecordError("too_long", f"{conv.label}: {len(too_long[0].input_ids)} tokens > max_length "
                          f"{max_length} (truncation: {policy})",
                          fix="raise render.max_length or set render.truncation to drop_oldest_turns or truncate")
    return examples, truncated


def _rendered(convs: Iterable[Conversation], renderer: ChatRenderer, chunk: int = 256):
    """Yield (conversation, its examples or RecordError), rendering `chunk` conversations at a time."""
    batch: list[Conversation] = []
    for conv in convs:
        batch.append(conv)
        if len(batch) == chunk:
            yield from zip(batch, renderer.render_batch(batch))
            batch = []
    if batch:
        yield from zip(batch, renderer.render_batch(batch))


def iter_examples(convs: Iterable[Conversation], renderer: ChatRenderer, report: MaskReport, rejects: list[dict],
                  *, on_error: str = "fail", progress: Callable[[int], None] | None = None) -> Iterator[Example]:
    """Render conversations one by one into masked examples, counting into `report` (its max_length and
    truncation_policy say how to fit them) and collecting bad ones into `rejects` (`skip`) or raising (`fail`)."""
    if report.truncation_policy not in TRUNCATION:
        raise ValueError(f"truncation={report.truncation_policy!r}; allowed: {', '.join(TRUNCATION)}")
    reasons: Counter[str] = Counter(report.rejected)
    for conv, rendered in _rendered(convs, renderer):
        if progress is not None:
            progress(1)
        report.conversations_in += 1
        try:
            if isinstance(rendered, RecordError):
                raise rendered
            exs, truncated = _fit(renderer, conv, rendered, report.max_length, report.truncation_policy)
        except RecordError as err:
            err = err.located(conv.source.path, conv.source.line) if conv.source and err.path is None else err
            if on_error == "fail":
                raise err from None
            reasons[err.reason] += 1
            report.rejected = dict(reasons)
            rejects.append({**err.to_dict(), "stage": "render", "record": conv.to_record()})
            continue
        report.conversations_kept += 1
        report.truncated += int(truncated)
        report.history_rewrite_splits += int(any("turn" in e.meta for e in exs))
        for e in exs:
            report.examples += 1
            report.tokens += len(e.input_ids)
            report.trained_tokens += e.n_trained
            report.trained_messages += e.trained_messages
            report.eot_trained += e.eot_trained
            report.boundary_tokens += e.boundary_tokens
            report.escaped_control_examples += int(e.escaped_control)
            yield replace(e, truncated=True) if truncated else e


def build_examples(convs: Iterable[Conversation], renderer: ChatRenderer, *, max_length: int,
                   truncation: str = "drop", on_error: str = "fail",
                   progress: Callable[[int], None] | None = None) -> tuple[list[Example], list[dict], MaskReport]:
    """Render all conversations; bad ones raise (`fail`) or go to rejects with their reason (`skip`).
    `progress(n)` is called as each conversation is done (n = 1)."""
    report = MaskReport(truncation_policy=truncation, max_length=max_length)
    rejects: list[dict] = []
    with no_cyclic_gc():
        examples = list(iter_examples(convs, renderer, report, rejects, on_error=on_error, progress=progress))
    assert report.conversations_in == report.conversations_kept + len(rejects)
    return examples, rejects, report


def build_renderer(model: ModelConfig, template: TemplateConfig, render: RenderConfig) -> ChatRenderer:
    """The tokenizer + template + render options that the `model`, `template` and `render` sections name."""
    tokenizer = load_tokenizer(model.tokenizer or model.name)
    return ChatRenderer.configured(tokenizer, load_template(template.name, tokenizer), render)


def read_data(data: DataConfig, paths: list[str], key: str, *, on_error: str | None = None):
    """Read the files named by config key `key` (e.g. data.train) as the `data` section says: every file must
    exist, and at least one record must be there unless data.allow_empty."""
    require_files(paths, key)
    read = read_conversations(paths, format=data.format, column_map=data.column_map or None,
                              on_error=on_error or data.on_error)
    check_not_empty(data, paths, key, read.n_in)
    return read


def check_not_empty(data: DataConfig, paths: list[str], key: str, n_in: int) -> None:
    """ConfigError when `paths` held no record at all, unless data.allow_empty."""
    if n_in == 0 and not data.allow_empty:
        raise ConfigError(key, [f"{', '.join(map(str, paths))}: no records; fix: check the file(s), or pass "
                                "--set data.allow_empty=true if an empty input is expected"])


def stratified_indices(categories: list[str], n: int, seed: int = 0) -> list[int]:
    """Indices of `n` records drawn per category in proportion to its size (largest remainder; every category
    gets one while n allows), at random within a category (seeded); returned in file order.

    >>> picked = stratified_indices(["a"] * 8 + ["b"] * 2 + ["c"], 4)
    >>> sorted(Counter(("a" * 8 + "bb" + "c")[i] for i in picked).items())
    [('a', 2), ('b', 1), ('c', 1)]
    """
    groups: dict[str, list[int]] = {}
    for i, c in enumerate(categories):
        groups.setdefault(c, []).append(i)
    if n >= len(categories):
        return list(range(len(categories)))
    quota = {c: 1 if n >= len(groups) else 0 for c in groups}
    left = n - sum(quota.values())
    share = {c: left * len(g) / len(categories) for c, g in groups.items()}
    for c in groups:
        quota[c] += min(int(share[c]), len(groups[c]) - quota[c])
    order = sorted(groups, key=lambda c: (-(share[c] - int(share[c])), -len(groups[c]), c))
    while sum(quota.values()) < n:  # remainders first; then any category with records left
        c = next(c for c in order if quota[c] < len(groups[c]))
        quota[c] += 1
        order.remove(c)
        order.append(c)
    rng = random.Random(seed)
    return sorted(i for c, g in groups.items() for i in rng.sample(g, quota[c]))
