"""Micro-batches for training: length-grouped padded items keep their token budget at bucketed widths."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest

from sftpipe.errors import ConfigError
from sftpipe.render import Example
from sftpipe.train.data import (ItemCollator, ItemDataset, example_groups, make_items, resolve_pad_multiple,
                                upsample_floor)


def _examples(lengths: list[int]) -> list[Example]:
    return [Example(list(range(1, n + 1)), [-100] + list(range(2, n + 1)), "") for n in lengths]


def test_padded_items_are_widened_to_the_multiple_and_keep_the_token_budget():
    rng = random.Random(0)
    lengths = [rng.randint(20, 300) for _ in range(200)]
    items, report = make_items(_examples(lengths), batching="padded", batch_size=8, max_length=512,
                               max_tokens=256, pad_multiple=64)
    collate = ItemCollator("padded", pad_token_id=0, pad_multiple=64)
    widths, slots, seen = set(), 0, []
    for item in items:
        batch = collate([item])
        rows, width = batch["input_ids"].shape
        widths.add(width)
        slots += rows * width
        assert width % 64 == 0
        assert rows == 1 or rows * width <= 256, (rows, width)  # rounded widths count against the budget
        seen += [len(r["input_ids"]) for r in item["rows"]]
    assert sorted(seen) == sorted(lengths)  # every example once
    assert report.slots == slots and report.tokens == sum(lengths)
    assert widths <= {64, 128, 192, 256, 320}  # 5 shapes instead of one per length


@pytest.mark.parametrize("batching,overflow", [("padded", "truncate"), ("packed", "truncate"), ("packed", "drop")])
def test_mapped_token_views_batch_exactly_like_lists(batching, overflow):
    """Examples whose ids are int32 views into one buffer (as sftpipe.tokenized maps them) give the same batches
    as Python lists, packs joined only when an item is read, and the views are never copied into the items."""
    rng = random.Random(1)
    lengths = [rng.randint(3, 90) for _ in range(60)]
    lists = _examples(lengths)
    flat_ids = np.concatenate([np.array(e.input_ids, np.int32) for e in lists])
    flat_labels = np.concatenate([np.array(e.labels, np.int32) for e in lists])
    ends = np.cumsum(lengths).tolist()
    views = [Example(flat_ids[a:b], flat_labels[a:b], "") for a, b in zip([0, *ends[:-1]], ends)]
    batches = []
    for examples in (lists, views):
        items, report = make_items(examples, batching=batching, batch_size=4, max_length=64, overflow=overflow,
                                   seed=3)
        collate, data = ItemCollator(batching, pad_token_id=0), ItemDataset(items)
        batches.append(([{k: v.tolist() for k, v in collate([data[i]]).items() if hasattr(v, "tolist")}
                         for i in range(len(data))], vars(report)))
    assert batches[0] == batches[1]
    rows = [r for it in make_items(views, batching=batching, batch_size=4, max_length=64, overflow=overflow)[0]
            for r in it["rows"]]
    held = [x["input_ids"] for r in rows for x in r.get("pack", [r])]
    assert all(isinstance(ids, np.ndarray) and np.shares_memory(ids, flat_ids) for ids in held)


def test_pad_multiple_defaults_by_device_and_precision_and_an_explicit_value_wins():
    assert resolve_pad_multiple(None, "cpu", "bf16") == 64 and resolve_pad_multiple(None, "cpu", "fp32") == 1
    assert resolve_pad_multiple(None, "cuda", "bf16") == 8 and resolve_pad_multiple(1, "cpu", "bf16") == 1


def test_doctests():
    import doctest

    import sftpipe.train.data

    result = doctest.testmod(sftpipe.train.data)
    assert result.attempted >= 5 and result.failed == 0


def test_category_floor_repeats_rare_categories_up_to_the_floor_and_keeps_every_example():
    cats = ["order"] * 60 + ["refund"] * 25 + ["lockout"] * 5 + ["fraud"] * 3 + [None] * 7
    exs = [Example([i + 1], [i + 1], "", meta={"category": c} if c else {}) for i, c in enumerate(cats)]
    out, repeated = upsample_floor(exs, 0.1, seed=0)
    assert out[:len(exs)] == exs  # the originals, in order, then the repeats
    share = Counter(example_groups(out))
    assert all(n / len(out) >= 0.1 for n in share.values()), share
    assert set(repeated) == {"lockout", "fraud", "(none)"} and share["order"] == 60 and share["refund"] == 25
    assert sum(repeated.values()) == len(out) - len(exs)
    by_id = {id(e): c for e, c in zip(exs, cats)}
    assert all(by_id[id(e)] == e.meta.get("category") for e in out[len(exs):])  # a repeat comes from its group
    assert upsample_floor(exs, 0.1, seed=0)[0] == out and upsample_floor(exs, 0.1, seed=1)[0] != out
    with pytest.raises(ConfigError, match="category_floor: 0.25 x 5 categories"):
        upsample_floor(exs, 0.25, seed=0)
