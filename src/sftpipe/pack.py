"""Batching strategies for rendered examples: best-fit-decreasing packing and length-grouped padded batches.

An example is `{"input_ids": list[int], "labels": list[int]}` with unshifted labels (IGNORE_INDEX = not trained);
the two may also be 1-d numpy arrays (views into a memory-mapped dataset, see sftpipe.tokenized), kept uncopied.
Both strategies apply one documented overflow policy to examples longer than `max_length` and report their
efficiency (real tokens / token slots the model computes over), so the two can be compared in numbers.
"""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass, field
from typing import Literal
from collections.abc import Sequence

import numpy as np

from .gcpause import no_cyclic_gc
from .labels import IGNORE_INDEX

Overflow = Literal["error", "drop", "truncate"]
OVERFLOW_POLICIES = ("error", "drop", "truncate")


def best_fit_decreasing(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Bin item indices so each bin's total length is <= capacity, placing the longest items first, each into
    the fullest bin that still has room (a new bin if none does).

    >>> best_fit_decreasing([7, 5, 3, 3, 2], capacity=10)
    [[0, 2], [1, 3, 4]]
    """
    if capacity <= 0:
        raise ValueError(f"capacity must be a positive number of tokens, got {capacity}")
    too_long = [(i, n) for i, n in enumerate(lengths) if n > capacity]
    if too_long:
        i, n = too_long[0]
        raise ValueError(f"item {i} has length {n} > capacity {capacity} ({len(too_long)} such item(s)); "
                         "fix: apply an overflow policy (see apply_overflow) before packing")
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (remaining room, bin id), sorted: the first entry >= n is the best fit
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        n = lengths[i]
        k = bisect.bisect_left(free, (n, -1))
        if k == len(free):
            bins.append([i])
            bisect.insort(free, (capacity - n, len(bins) - 1))
        else:
            room, b = free.pop(k)
            bins[b].append(i)
            bisect.insort(free, (room - n, b))
    return bins


def min_slack_decreasing(lengths: Sequence[int], capacity: int, *, window: int = 64) -> list[list[int]]:
    """Best-fit-decreasing refined to minimum slack: each new bin takes the longest remaining item, then the
    subset of `window` remaining items (spread over all lengths that fit) which fills the rest best, found
    exactly by a bitset subset-sum. On mid-sized items, where plain BFD leaves a gap smaller than any item in most bins,
    this closes those gaps; `window` bounds the work per bin.

    >>> min_slack_decreasing([6, 5, 5, 4], capacity=10)
    [[0, 3], [1, 2]]
    >>> len(best_fit_decreasing([5, 4, 4, 3, 2, 2], 10)), len(min_slack_decreasing([5, 4, 4, 3, 2, 2], 10))
    (3, 2)
    """
    if any(n > capacity for n in lengths) or capacity <= 0:
        return best_fit_decreasing(lengths, capacity)  # raises the argument / overflow error
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    neg = [-lengths[i] for i in order]  # ascending: bisect finds the longest item that fits a room
    alive = [True] * len(order)  # by position in `order`
    bins: list[list[int]] = []
    head = 0
    while head < len(order):
        alive[head] = False
        room = capacity - lengths[order[head]]
        # candidates spread over every length that still fits, longest first, so small items can close the gap
        start = max(head + 1, bisect.bisect_left(neg, -room))
        stride = max(1, (len(order) - start) // window)
        candidates, k = [], start
        while k < len(order) and len(candidates) < window:
            end = min(len(order), k + stride)
            j = next((j for j in range(k, end) if alive[j]), None)
            if j is not None:
                candidates.append(j)
            k = end
        mask = (1 << (room + 1)) - 1
        reach = [1]  # reach[j]: bitset of the sums reachable with the first j candidates
        for k in candidates:
            reach.append((reach[-1] | (reach[-1] << -neg[k])) & mask)
            if reach[-1] >> room & 1:
                break
        total, chosen = reach[-1].bit_length() - 1, []
        for j in range(len(reach) - 1, 0, -1):  # walk back: take candidate j-1 if the sum needs it
            if not reach[j - 1] >> total & 1:
                chosen.append(candidates[j - 1])
                total += neg[candidates[j - 1]]
        for k in chosen:
            alive[k] = False
        bins.append([order[head]] + [order[k] for k in reversed(chosen)])
        while head < len(order) and not alive[head]:
            head += 1
    return bins


@dataclass
class PackReport:
    """What a batching strategy did: how many examples and rows, and how many computed slots held real tokens."""

    strategy: str
    examples: int  # examples placed into packs or batches
    packs_or_batches: int
    tokens: int  # real tokens placed
    slots: int  # token positions the model computes over (packs * max_length, or rows * padded length)
    efficiency: float  # tokens / slots
    overflow: dict[str, int]  # reason -> count for examples longer than max_length
    dropped: list[tuple[int, str]] = field(default_factory=list)  # (input index, reason) of every dropped example


def _trained(labels: Sequence[int]) -> bool:
    # labels[0] is never a prediction target (logits[t] predicts labels[t + 1]), so it doesn't count.
    if isinstance(labels, np.ndarray):
        return bool((labels[1:] != IGNORE_INDEX).any())
    return any(label != IGNORE_INDEX for label in labels[1:])


def as_list(values) -> list[int]:
    """Token values as a Python list (numpy arrays and tensors through `tolist`)."""
    return values.tolist() if hasattr(values, "tolist") else list(values)


def apply_overflow(examples: list[dict], max_length: int, overflow: Overflow = "error"):
    """Apply the overflow policy to examples longer than `max_length`.

    Returns `(kept, counts, dropped)`: `kept` is a list of `(input index, example)` (truncated copies where cut),
    `counts` maps reason -> count, `dropped` lists `(input index, reason)`. Every input is either kept or dropped.

    >>> examples = [{"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}, {"input_ids": [4, 5], "labels": [-100, 5]}]
    >>> kept, counts, dropped = apply_overflow(examples, 2, "truncate")
    >>> kept
    [(0, {'input_ids': [1, 2], 'labels': [-100, 2]}), (1, {'input_ids': [4, 5], 'labels': [-100, 5]})]
    >>> counts, dropped
    ({'truncated': 1}, [])
    """
    if overflow not in OVERFLOW_POLICIES:
        raise ValueError(f"overflow={overflow!r} is not one of {', '.join(OVERFLOW_POLICIES)}; "
                         "fix: choose error (fail), drop (skip long examples) or truncate (cut them)")
    if max_length <= 1:
        raise ValueError(f"max_length must be at least 2 tokens, got {max_length}")
    kept: list[tuple[int, dict]] = []
    counts: dict[str, int] = {}
    dropped: list[tuple[int, str]] = []

    def drop(i: int, reason: str) -> None:
        counts[reason] = counts.get(reason, 0) + 1
        dropped.append((i, reason))

    for i, ex in enumerate(examples):
        ids, labels = ex["input_ids"], ex["labels"]
        if len(ids) != len(labels) or len(ids) == 0:
            raise ValueError(f"example {i} has {len(ids)} input_ids and {len(labels)} labels; they must be equal "
                             "and non-zero; fix: render examples with sftpipe.render")
        if not _trained(labels):
            raise ValueError(f"example {i} has no trained token (every label after the first is {IGNORE_INDEX}); "
                             "fix: drop it before batching, it would train on nothing")
        if len(ids) <= max_length:
            kept.append((i, ex))
        elif overflow == "error":
            raise ValueError(f"example {i} has {len(ids)} tokens, more than max_length={max_length}; fix: raise "
                             "max_length, or set overflow to 'drop' or 'truncate'")
        elif overflow == "drop":
            drop(i, "dropped_too_long")
        elif _trained(labels[:max_length]):
            counts["truncated"] = counts.get("truncated", 0) + 1
            kept.append((i, {**ex, "input_ids": ids[:max_length], "labels": labels[:max_length]}))
        else:
            drop(i, "no_trained_tokens_after_truncation")
    return kept, counts, dropped


STRATEGIES = {"min_slack": min_slack_decreasing, "bfd": best_fit_decreasing}


def pack(examples: list[dict], max_length: int, *, overflow: Overflow = "error",
         strategy: Literal["min_slack", "bfd"] = "min_slack") -> tuple[list[dict], PackReport]:
    """Pack examples into rows of at most `max_length` tokens (`min_slack`: best-fit-decreasing with
    minimum-slack bin filling, the default; or plain `bfd`).

    Each pack has `input_ids`, `labels` (each example's first label set to IGNORE_INDEX, so no example is predicted from
    the one before it), `position_ids` restarting at 0 per example, and `seq_lens`.

    >>> rows = [{"input_ids": [1, 2, 3], "labels": [1, 2, 3]}, {"input_ids": [4, 5], "labels": [4, 5]}]
    >>> packs, report = pack(rows, 8)
    >>> [packs[0][key] for key in ("input_ids", "labels", "position_ids", "seq_lens")]
    [[1, 2, 3, 4, 5], [-100, 2, 3, -100, 5], [0, 1, 2, 0, 1], [3, 2]]
    >>> report.efficiency
    0.625
    """
    members, report = pack_members(examples, max_length, overflow=overflow, strategy=strategy)
    with no_cyclic_gc():
        return [join_pack(m) for m in members], report


def pack_members(examples: list[dict], max_length: int, *, overflow: Overflow = "error",
                 strategy: Literal["min_slack", "bfd"] = "min_slack") -> tuple[list[list[dict]], PackReport]:
    """What `pack` puts in each pack (the examples, cut by the overflow policy) without joining them, so the
    tokens stay where they are until `join_pack` builds the row.

    >>> rows = [{"input_ids": [1, 2, 3], "labels": [1, 2, 3]}, {"input_ids": [4, 5], "labels": [4, 5]}]
    >>> members, _ = pack_members(rows, 4)
    >>> [[m["input_ids"] for m in pack] for pack in members]
    [[[1, 2, 3]], [[4, 5]]]
    """
    kept, counts, dropped = apply_overflow(examples, max_length, overflow)
    bins, report = pack_lengths([len(ex["input_ids"]) for _, ex in kept], max_length, strategy=strategy)
    report.overflow, report.dropped = counts, dropped
    return [[kept[k][1] for k in members] for members in bins], report


def join_pack(members: list[dict]) -> dict[str, list[int]]:
    """One pack row from its examples: tokens joined, each example's first label IGNORE_INDEX (nothing is
    predicted across examples), positions restarting at 0, `seq_lens`, and `examples` when they carry "example".

    >>> join_pack([{"input_ids": [1, 2], "labels": [1, 2]}, {"input_ids": [3], "labels": [3]}])["labels"]
    [-100, 2, -100]
    """
    row: dict[str, list[int]] = {"input_ids": [], "labels": [], "position_ids": [], "seq_lens": []}
    for ex in members:
        n = len(ex["input_ids"])
        row["input_ids"] += as_list(ex["input_ids"])
        row["labels"] += [IGNORE_INDEX] + as_list(ex["labels"][1:])
        row["position_ids"] += range(n)
        row["seq_lens"].append(n)
        if "example" in ex:  # which examples a pack holds (train.data counts examples seen)
            row.setdefault("examples", []).append(ex["example"])
    return row


def pack_lengths(lengths: list[int], max_length: int, *, strategy: Literal["min_slack", "bfd"] = "min_slack"
                 ) -> tuple[list[list[int]], PackReport]:
    """The bins (indices into `lengths`, each <= `max_length`) `pack` fills, and its report, from lengths alone.

    >>> pack_lengths([3, 2, 6], 8)[0], pack_lengths([3, 2, 6], 8)[1].efficiency
    ([[2, 1], [0]], 0.6875)
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy={strategy!r}; allowed: {', '.join(STRATEGIES)}")
    bins = STRATEGIES[strategy](lengths, max_length)
    tokens, slots = sum(lengths), len(bins) * max_length
    return bins, PackReport(strategy, len(lengths), len(bins), tokens, slots, tokens / slots if slots else 0.0, {})


def round_up(n: int, multiple: int) -> int:
    """`n` rounded up to a multiple of `multiple` (the padded width of a row of `n` tokens).

    >>> round_up(65, 64), round_up(64, 64), round_up(5, 1)
    (128, 64, 5)
    """
    return -(-n // multiple) * multiple


def group_by_length(examples: list[dict], *, batch_size: int, max_length: int | None = None, seed: int = 0,
                    overflow: Overflow = "error", multiple: int = 1) -> tuple[list[list[int]], PackReport]:
    """Group example indices into padded batches of similar length: sort by length, chunk by `batch_size`,
    shuffle the batch order with `seed`. Indices refer to `examples`; padded slots are counted at widths rounded
    up to `multiple` (collate with the same `pad_to_multiple_of`).

    With `overflow="truncate"`, long examples are listed uncut: collate with `PaddedCollator(max_length=...)`
    using the same `max_length`, which cuts them exactly as counted here.

    >>> group_by_length([{"input_ids": [1] * n, "labels": [1] * n} for n in (5, 2, 4, 3)], batch_size=2)[0]
    [[1, 3], [2, 0]]
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be a positive number of rows, got {batch_size}")
    if max_length is None:  # no limit: nothing overflows, but examples are still validated
        max_length = max([2] + [len(ex["input_ids"]) for ex in examples])
    kept, counts, dropped = apply_overflow(examples, max_length, overflow)
    batches, report = group_lengths({i: len(ex["input_ids"]) for i, ex in kept}, batch_size=batch_size, seed=seed,
                                    multiple=multiple)
    report.overflow, report.dropped = counts, dropped
    return batches, report


def group_lengths(lengths: dict[int, int] | list[int], *, batch_size: int, seed: int = 0, multiple: int = 1
                  ) -> tuple[list[list[int]], PackReport]:
    """`group_by_length` from lengths alone (a list, or index -> length): the batches and their report.

    >>> group_lengths([5, 2, 4, 3], batch_size=2)[0]
    [[1, 3], [2, 0]]
    """
    lengths = dict(enumerate(lengths)) if isinstance(lengths, list) else lengths
    order = sorted(lengths, key=lambda i: (lengths[i], i))
    batches = [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
    random.Random(seed).shuffle(batches)
    return batches, padded_report("group_by_length", lengths, batches, multiple, {}, [])


def padded_report(strategy: str, lengths: dict[int, int], batches: list[list[int]], multiple: int,
                  overflow: dict[str, int], dropped: list[tuple[int, str]]) -> PackReport:
    """The PackReport of padded `batches` (indices into `lengths`), each row as wide as the batch's longest,
    rounded up to `multiple`.

    >>> padded_report("x", {0: 3, 1: 5, 2: 4}, [[0, 1], [2]], 4, {}, []).slots
    20
    """
    tokens = sum(lengths.values())
    slots = sum(len(b) * round_up(max(lengths[i] for i in b), multiple) for b in batches)
    return PackReport(strategy, len(lengths), len(batches), tokens, slots, tokens / slots if slots else 0.0,
                      overflow, dropped)
