"""Collators for `Trainer(data_collator=...)`: padding-free rows for packs, and right-padded batches.

Padding-free relies on transformers building a block-diagonal causal mask from `position_ids` when there is no
`attention_mask` (`masking_utils.find_packed_sequence_indices`, for sdpa/eager/flex) and on `cu_seq_lens_*` for
flash-attention varlen kernels. transformers only does the former when no KV cache is passed, and Llama-style models
create one whenever `use_cache` is on (the config default), so the packed batch carries `use_cache=False`.
"""

from __future__ import annotations

from typing import Any
from collections.abc import Sequence

import torch
from transformers import DataCollatorWithFlattening

from .labels import IGNORE_INDEX
from .pack import as_list, round_up


def _seq_lens(feature: dict, index: int) -> list[int]:
    """Example lengths inside one feature: `seq_lens`, else where `position_ids` restart at 0, else one example.

    `position_ids` is the fallback because Trainer's `remove_unused_columns` drops `seq_lens` from a dataset
    (the model's forward has no such argument) but keeps `position_ids`.
    """
    n = len(feature["input_ids"])
    if "seq_lens" in feature:
        lens = as_list(feature["seq_lens"])
    elif "position_ids" in feature:
        positions = as_list(feature["position_ids"])
        starts = [t for t, p in enumerate(positions) if p == 0]
        if not starts or starts[0] != 0:
            raise ValueError(f"feature {index}: position_ids must start at 0, got {positions[:4]}...; "
                             "fix: build packs with sftpipe.pack.pack")
        lens = [b - a for a, b in zip(starts, starts[1:] + [n])]
    else:
        lens = [n]
    if sum(lens) != n or min(lens, default=0) <= 0:
        raise ValueError(f"feature {index}: seq_lens {lens} do not split its {n} tokens; "
                         "fix: build packs with sftpipe.pack.pack")
    return lens


class PackedCollator:
    """Padding-free collator: concatenates every example of the batch's packs into one row.

    Returns `input_ids`, `labels`, `position_ids` of shape [1, N] (positions restart at 0 per example, each
    example's first label is IGNORE_INDEX), `cu_seq_lens_q/k` and `max_length_q/k` for flash-attention,
    `use_cache=False`, and no `attention_mask`. Features may be packs (with `seq_lens` or `position_ids`) or
    single examples.

    >>> batch = PackedCollator()([{"input_ids": [1, 2, 3, 4, 5], "labels": [-100, 2, 3, 4, 5], "seq_lens": [3, 2]}])
    >>> batch["position_ids"].tolist(), batch["labels"].tolist(), batch["cu_seq_lens_q"].tolist()
    ([[0, 1, 2, 0, 1]], [[-100, 2, 3, -100, 5]], [0, 3, 5])
    """

    def __init__(self, *, return_flash_attn_kwargs: bool = True):
        # transformers' own padding-free collator does the flattening; we only split packs back into examples.
        self._flatten = DataCollatorWithFlattening(return_flash_attn_kwargs=return_flash_attn_kwargs,
                                                   return_tensors="pt")

    def __call__(self, features: Sequence[dict]) -> dict[str, Any]:
        examples = []
        for i, feature in enumerate(features):
            if "labels" not in feature:
                raise ValueError(f"feature {i} has no labels (keys: {sorted(feature)}); "
                                 "fix: collate rendered examples or packs, which carry labels")
            ids, labels = as_list(feature["input_ids"]), as_list(feature["labels"])
            start = 0
            for n in _seq_lens(feature, i):
                examples.append({"input_ids": ids[start:start + n], "labels": labels[start:start + n]})
                start += n
        batch = self._flatten(examples)
        batch["use_cache"] = False
        return batch


class PaddedCollator:
    """Right-pads a batch: `input_ids` with `pad_token_id`, `labels` with IGNORE_INDEX, `attention_mask` with 0.

    `max_length` cuts longer rows first (the padded counterpart of `group_by_length(overflow="truncate")`).

    >>> batch = PaddedCollator(0, pad_to_multiple_of=4)([{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]},
    ...                                                  {"input_ids": [8, 9], "labels": [-100, 9]}])
    >>> batch["input_ids"].tolist(), batch["labels"].tolist(), batch["attention_mask"].tolist()
    ([[5, 6, 7, 0], [8, 9, 0, 0]], [[-100, 6, 7, -100], [-100, 9, -100, -100]], [[1, 1, 1, 0], [1, 1, 0, 0]])
    """

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None, max_length: int | None = None):
        if pad_token_id is None:
            raise ValueError("pad_token_id is None; fix: set tokenizer.pad_token (for example to its eos token)")
        if pad_to_multiple_of is not None and pad_to_multiple_of <= 0:
            raise ValueError(f"pad_to_multiple_of must be a positive integer or None, got {pad_to_multiple_of}")
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of
        self.max_length = max_length

    def __call__(self, features: Sequence[dict]) -> dict[str, torch.Tensor]:
        rows = []
        for i, feature in enumerate(features):
            ids, labels = as_list(feature["input_ids"]), as_list(feature["labels"])
            if self.max_length is not None and len(ids) > self.max_length:
                ids, labels = ids[:self.max_length], labels[:self.max_length]
                if all(label == IGNORE_INDEX for label in labels[1:]):
                    raise ValueError(f"feature {i} has no trained token left after truncation to max_length="
                                     f"{self.max_length}; fix: batch with sftpipe.pack.group_by_length(overflow="
                                     "'truncate'), which drops such examples")
            rows.append((ids, labels))
        width = max(len(ids) for ids, _ in rows)
        if self.pad_to_multiple_of:
            width = round_up(width, self.pad_to_multiple_of)
        input_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        labels_t = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, (ids, labels) in enumerate(rows):
            input_ids[r, :len(ids)] = torch.tensor(ids, dtype=torch.long)
            labels_t[r, :len(ids)] = torch.tensor(labels, dtype=torch.long)
            attention_mask[r, :len(ids)] = 1
        return {"input_ids": input_ids, "labels": labels_t, "attention_mask": attention_mask}
