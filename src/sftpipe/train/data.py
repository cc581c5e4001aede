"""Training data: conversation files -> masked examples (the cached Arrow dataset, sftpipe.tokenized) ->
micro-batches, with content hashes.

Each dataset item is one whole micro-batch, `{"rows": [...]}`: a length-grouped group of examples (padded
batching) or up to `batch_size` packs (packed batching). Rows hold the examples' tokens uncopied (views into the
memory-mapped dataset); a pack is `{"pack": [examples]}` until the item is read, when its tokens are joined. The
Trainer's loader therefore uses batch size 1 and its seeded sampler shuffles micro-batches; under DDP, process r
of N takes items r, r+N, ... of the same shuffled order, so N processes at batch b see exactly the micro-batches one
process sees at gradient accumulation N.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

import torch

from ..collate import PackedCollator, PaddedCollator
from ..curated import files_hash, require_curated
from ..dataset import MaskReport, Tracker, stratified_indices
from ..errors import ConfigError
from ..io import require_files
from ..pack import PackReport, apply_overflow, group_by_length, join_pack, pack_members, padded_report, round_up
from ..render import ChatRenderer, Example
from ..tokenized import Tokenized, load_or_build
from .lifecycle import built_once
from .trainer import trained_index

@dataclass
class SplitData:
    """One split, rendered and batched: examples, micro-batch items, reports and the content hash."""

    name: str
    files: list[str]
    hash: str
    examples: list[Example]
    items: list[dict[str, Any]]
    batching: PackReport
    mask: MaskReport
    records_in: int
    rejects: list[dict] = field(default_factory=list)
    repeated: dict[str, int] = field(default_factory=dict)  # examples repeated per category (train.category_floor)
    left_out: int = 0  # examples not drawn into the stratified sample (train.eval_limit)
    tokenized: Tokenized | None = None  # the dataset the examples come from (meta "row": their row in it)

    def parity_sample(self, n: int) -> list[Example]:
        """The first `n` examples in full (text and messages too), for the parity proof."""
        rows = [e.meta["row"] for e in self.examples[: max(n, 0)]]
        return self.tokenized.examples(rows) if rows else []

    @property
    def tokens(self) -> int:
        return self.batching.tokens

    def summary(self) -> dict[str, Any]:
        """JSON-ready counts for run.json."""
        return {"files": self.files, "hash": self.hash, "records_in": self.records_in,
                "rejected": len(self.rejects), "examples": len(self.examples), "repeated": self.repeated,
                "left_out": self.left_out,
                "micro_batches": len(self.items),
                "tokens": self.batching.tokens, "trained_tokens": self.mask.trained_tokens,
                "batching": {k: v for k, v in vars(self.batching).items() if k != "dropped"}}


CPU_MAX_TOKENS = 768


def resolve_max_tokens(requested: int | None, device: str) -> int | None:
    """train.max_tokens, else 768 padded token slots per micro-batch on a CPU (bounds peak memory) and no cap
    on a GPU."""
    return requested if requested is not None else (CPU_MAX_TOKENS if device == "cpu" else None)


CPU_BF16_PAD_MULTIPLE, GPU_PAD_MULTIPLE = 64, 8


def resolve_pad_multiple(requested: int | None, device: str, precision: str) -> int:
    """train.pad_to_multiple_of, else 64 for bf16 on a CPU, 8 on a GPU and 1 for fp32 on a CPU: padded rows are
    widened to a multiple of it.

    In bf16 on a CPU, oneDNN and ATen's flash attention compile and cache kernels for every new tensor shape, so
    free lengths add ~16 MB of never-freed kernels per step for SmolLM2-135M and peak memory creeps up all run
    (bench/shape_bench.py); widths in steps of 64 bound the shapes at no loss of speed. fp32 shows no such
    growth, so there padding would only cost (measured 10% fewer tokens/s).

    >>> resolve_pad_multiple(None, "cpu", "bf16"), resolve_pad_multiple(None, "cpu", "fp32")
    (64, 1)
    """
    if requested is not None:
        return requested
    if device != "cpu":
        return GPU_PAD_MULTIPLE
    return CPU_BF16_PAD_MULTIPLE if precision == "bf16" else 1


def resolve_batching(requested: str, device: str) -> str:
    """`auto` -> packed on GPU (padding-free rows), length-grouped padded batches on CPU (no attention across
    examples, little padding)."""
    if requested in ("packed", "padded"):
        return requested
    return "packed" if device == "cuda" else "padded"


def budget_groups(lengths: dict[int, int], *, batch_size: int, max_tokens: int, seed: int = 0,
                  multiple: int = 1) -> list[list[int]]:
    """Length-sorted groups of at most `batch_size` rows and `max_tokens` padded slots (rows x longest row, its
    width rounded up to `multiple`; a longer row goes alone), in a seeded shuffled order.

    >>> budget_groups({0: 5, 1: 2, 2: 4, 3: 3, 4: 9}, batch_size=3, max_tokens=10)
    [[1, 3], [4], [2, 0]]
    >>> budget_groups({0: 5, 1: 2, 2: 4, 3: 3, 4: 9}, batch_size=3, max_tokens=10, multiple=4)
    [[0], [1, 3], [2], [4]]
    """
    groups: list[list[int]] = [[]]
    for i in sorted(lengths, key=lambda i: (lengths[i], i)):
        cur = groups[-1]
        if cur and (len(cur) >= batch_size or (len(cur) + 1) * round_up(lengths[i], multiple) > max_tokens):
            groups.append(cur := [])
        cur.append(i)
    groups = [g for g in groups if g]
    random.Random(seed).shuffle(groups)
    return groups


def _padded(rows: list[dict], batch_size: int, max_tokens: int, max_length: int, overflow: str, seed: int,
            multiple: int):
    kept, counts, dropped = apply_overflow(rows, max_length, overflow)
    lengths = {i: len(ex["input_ids"]) for i, ex in kept}
    groups = budget_groups(lengths, batch_size=batch_size, max_tokens=max_tokens, seed=seed, multiple=multiple)
    cut = dict(kept)
    report = padded_report("group_by_length_budget", lengths, groups, multiple, counts, dropped)
    return [{"rows": [cut[i] for i in g]} for g in groups], report


def make_items(examples: list[Example], *, batching: str, batch_size: int, max_length: int,
               overflow: str = "drop", seed: int = 0, max_tokens: int | None = None, pad_multiple: int = 1
               ) -> tuple[list[dict[str, Any]], PackReport]:
    """Micro-batch items: `padded` groups up to `batch_size` examples of similar length (and at most `max_tokens`
    padded slots, rows widened to a multiple of `pad_multiple`); `packed` puts up to `batch_size` best-fit packs
    of <= `max_length` tokens in each item.

    >>> from sftpipe.render import Example
    >>> exs = [Example([1] * n, [-100] + [1] * (n - 1), "") for n in (5, 2, 4, 3)]
    >>> items, _ = make_items(exs, batching="padded", batch_size=2, max_length=8)
    >>> sorted(sorted(len(r["input_ids"]) for r in it["rows"]) for it in items)
    [[2, 3], [4, 5]]
    """
    rows = [{"input_ids": e.input_ids, "labels": e.labels, "example": i} for i, e in enumerate(examples)]
    if batching == "padded" and max_tokens is not None:
        return _padded(rows, batch_size, max_tokens, max_length, overflow, seed, pad_multiple)
    if batching == "padded":
        groups, report = group_by_length(rows, batch_size=batch_size, max_length=max_length, seed=seed,
                                         overflow=overflow, multiple=pad_multiple)
        return [{"rows": [rows[i] for i in g]} for g in groups], report
    if batching == "packed":
        packs, report = pack_members(rows, max_length, overflow=overflow)
        packs = [{"pack": members} for members in packs]
        return [{"rows": packs[s:s + batch_size]} for s in range(0, len(packs), batch_size)], report
    raise ValueError(f"batching={batching!r}; allowed: packed, padded (auto is resolved by resolve_batching)")


class ItemDataset(torch.utils.data.Dataset):
    """A list of micro-batch items as a map-style dataset; packs are joined into rows as an item is read."""

    def __init__(self, items: list[dict[str, Any]]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = self.items[i]
        return {**item, "rows": [join_pack(r["pack"]) if "pack" in r else r for r in item["rows"]]}


class ItemCollator:
    """Collates the single item the loader hands over (batch size 1) into model inputs, plus `trained_index`
    (the positions the loss is computed at, see trainer.TrainedPositions) and `example_index` (the examples it
    holds). Padded rows are widened to a multiple of `pad_multiple`."""

    def __init__(self, batching: str, pad_token_id: int, pad_multiple: int = 1):
        self.batching = batching
        self._collate = (PaddedCollator(pad_token_id, pad_to_multiple_of=pad_multiple) if batching == "padded"
                         else PackedCollator())

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        if len(features) != 1:
            raise ValueError(f"got {len(features)} items per loader batch; each item is a whole micro-batch, so "
                             "fix: keep per_device_train_batch_size=1 (set train.batch_size instead)")
        rows = features[0]["rows"]
        batch = self._collate(rows)
        batch["trained_index"] = trained_index(batch["labels"])
        if all("example" in r or "examples" in r for r in rows):  # which examples this micro-batch trains on
            batch["example_index"] = torch.tensor([i for r in rows for i in r.get("examples", [r.get("example")])])
        return batch


def end_of_turn_ids(examples: list[Example]) -> list[int]:
    """The token ids that close trained replies (the template's end-of-turn tokens), sorted.

    >>> from sftpipe.render import Example
    >>> end_of_turn_ids([Example([5, 6, 2, 7, 2], [-100, 6, 2, 7, 2], "", eot_positions=[2, 4])])
    [2]
    """
    found = {t for e in examples for t in e.eot_ids}  # every control token of a multi-token turn ending
    found |= {int(e.input_ids[p]) for e in examples for p in e.eot_positions if 0 <= p < len(e.input_ids)}
    return sorted(found)


def load_split(cfg, renderer: ChatRenderer, split: str, *, batching: str, seed: int, max_tokens: int | None = None,
               pad_multiple: int = 1, progress: Tracker | None = None, builds: bool = True) -> SplitData | None:
    """Render (or memory-map the cached render of, see sftpipe.tokenized) and batch `data.<split>` of `cfg`; None
    when the split lists no files. Under several processes, the ones with `builds` (one per machine) render while
    the others wait, then map the same dataset; `progress(label, total)` returns the callback that counts rows."""
    paths = list(getattr(cfg.data, split))
    if not paths:
        if split == "train":
            raise ConfigError("config", ["data.train: no input files; fix: set data.train or pass --input"])
        return None
    require_files(paths, f"data.{split}", made_by={cfg.curate.out_dir: "sftpipe curate"})
    for p in paths:
        require_curated(p)
    data_hash = files_hash(paths)
    tk = built_once(lambda: load_or_build(cfg.data, cfg.render, renderer, paths, f"data.{split}",
                                          data_hash=data_hash, progress=progress), builds, f"data.{split}")
    examples = tk.token_examples()
    if not examples:
        raise ConfigError("config", [f"data.{split}: no example left after rendering ({len(tk.rejects)} rejected, "
                                     f"reasons {tk.mask.rejected}); fix: check the files and render.max_length"])
    left_out = 0
    if split == "eval" and cfg.train.eval_limit:
        keep = set(stratified_indices(example_groups(examples), cfg.train.eval_limit, seed))
        examples, left_out = [e for i, e in enumerate(examples) if i in keep], len(examples) - len(keep)
    repeated: dict[str, int] = {}
    if split == "train" and cfg.train.category_floor:
        examples, repeated = upsample_floor(examples, cfg.train.category_floor, seed)
    items, report = make_items(examples, batching=batching, batch_size=cfg.train.batch_size,
                               max_length=cfg.render.max_length, overflow=cfg.render.overflow, seed=seed,
                               max_tokens=max_tokens, pad_multiple=pad_multiple)
    return SplitData(split, [str(p) for p in paths], data_hash, examples, items, report, tk.mask, tk.records_in,
                     tk.rejects, repeated, left_out, tk)


def example_groups(examples: list[Example], key: str = "category") -> list[str]:
    """Each example's group for the examples-seen count: its record's `key` field, else "(none)".

    >>> from sftpipe.render import Example
    >>> example_groups([Example([1], [1], "", meta={"category": "refund"}), Example([1], [1], "")])
    ['refund', '(none)']
    """
    return [str(e.meta.get(key) or "(none)") for e in examples]


def upsample_floor(examples: list[Example], floor: float, seed: int, key: str = "category"
                   ) -> tuple[list[Example], dict[str, int]]:
    """Examples plus repeats of every group (record field `key`, see `example_groups`) below `floor` of the total,
    until each reaches it; repeats are drawn in seeded shuffled passes over the group. Returns (examples, repeats
    per group).

    >>> from sftpipe.render import Example
    >>> exs = [Example([i], [i], "", meta={"category": c}) for i, c in enumerate("aaaaaaaab")]
    >>> out, added = upsample_floor(exs, 0.2, seed=0)
    >>> added, [e.meta["category"] for e in out].count("b") / len(out)
    ({'b': 1}, 0.2)
    """
    groups = example_groups(examples, key)
    members: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    if floor * len(members) >= 1:
        raise ConfigError("config", [f"train.category_floor: {floor:g} x {len(members)} categories >= 1, so no "
                                     f"share can reach it; fix: set it below {1 / len(members):.3f} or to 0"])
    low: set[str] = set()
    while True:  # the total grows with every repeat, so a group can fall below the floor once others are raised
        rest = sum(len(m) for g, m in members.items() if g not in low)
        total = rest / (1 - floor * len(low))
        more = {g for g, m in members.items() if g not in low and len(m) < floor * total}
        if not more:
            break
        low |= more
    rng = random.Random(seed)
    out, added = list(examples), {}
    for g in sorted(low):
        need = math.ceil(floor * total) - len(members[g])
        draws: list[int] = []
        while len(draws) < need:
            draws += rng.sample(members[g], len(members[g]))
        out += [examples[i] for i in draws[:need]]
        added[g] = need
    return out, added


def effective_batch(items: list[dict], grad_accum: int, world: int) -> dict[str, float]:
    """Mean rows, sequences (examples) and tokens per optimizer step."""
    k = grad_accum * world
    n = max(len(items), 1)
    rows = sum(len(it["rows"]) for it in items) / n
    members = [r.get("pack", [r]) for it in items for r in it["rows"]]
    seqs = sum(len(m) for m in members) / n
    tokens = sum(len(x["input_ids"]) for m in members for x in m) / n
    return {"rows": round(rows * k, 2), "sequences": round(seqs * k, 2), "tokens": round(tokens * k, 1)}
