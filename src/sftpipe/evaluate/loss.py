"""Held-out loss on assistant tokens only (the training masks): overall, per category, per frequency decile.

Loss is the mean negative log-likelihood per trained token (nats), perplexity is exp(loss). Aggregates pool
tokens (sum of NLL / sum of tokens), so long replies weigh more, as in training.
"""

from __future__ import annotations

import inspect
import math
from collections import defaultdict
from collections.abc import Iterable

from ..dataset import build_examples
from ..labels import IGNORE_INDEX
from ..render import ChatRenderer, Example
from .items import EvalItem


def _token_batches(lengths: list[int], tokens_per_batch: int) -> list[list[int]]:
    """Indices grouped so that (rows x longest row) stays within the budget, shortest first.

    >>> _token_batches([5, 2, 9, 3], 10)
    [[1, 3], [0], [2]]
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    for i in order:
        if batches and (len(batches[-1]) + 1) * lengths[i] <= tokens_per_batch:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def _accepts_logits_to_keep(model) -> bool:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT wraps the HF model
    return "logits_to_keep" in inspect.signature(base.forward).parameters


def token_nll(model, examples: list[Example], *, tokens_per_batch: int = 4096) -> list[tuple[float, int]]:
    """(sum of NLL, number of trained tokens) per example, in input order; padding never changes a result.

    Logits are computed only at positions that predict a trained token (when the model supports
    `logits_to_keep`), so long prompts cost no vocabulary projection.
    """
    import torch
    import torch.nn.functional as F

    device = next(model.parameters()).device
    keep_some = _accepts_logits_to_keep(model)
    out: list[tuple[float, int]] = [(0.0, 0)] * len(examples)
    model.eval()
    for batch in _token_batches([len(e.input_ids) for e in examples], tokens_per_batch):
        width = max(len(examples[i].input_ids) for i in batch)
        ids = torch.zeros((len(batch), width), dtype=torch.long)
        labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):
            n = len(examples[i].input_ids)
            ids[row, :n] = torch.tensor(examples[i].input_ids)
            labels[row, :n] = torch.tensor(examples[i].labels)
            mask[row, :n] = 1
        target = labels[:, 1:]  # token t is predicted from position t - 1
        cols = torch.nonzero((target != IGNORE_INDEX).any(dim=0)).flatten()  # positions that predict a trained token
        kwargs = {"logits_to_keep": cols.to(device)} if keep_some else {}
        with torch.inference_mode():
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), **kwargs).logits
            if not keep_some:
                logits = logits[:, cols]
            tgt = target[:, cols].to(device)
            picked = tgt != IGNORE_INDEX
            nll = torch.zeros(tgt.shape, dtype=torch.float32, device=device)
            nll[picked] = F.cross_entropy(logits[picked].float(), tgt[picked], reduction="none")
        for row, i in enumerate(batch):
            out[i] = (float(nll[row].sum()), int(picked[row].sum()))
    return out


def _entry(nll: float, tokens: int, examples: int) -> dict:
    loss = nll / tokens if tokens else float("nan")
    return {"loss": round(loss, 6), "perplexity": round(math.exp(loss), 4) if tokens else float("nan"),
            "tokens": tokens, "examples": examples}


def summarize(rows: Iterable[tuple[str, float, int]], deciles: dict[str, int]) -> dict:
    """Pool (category, nll_sum, tokens) rows into overall, per-category and per-decile loss and perplexity.

    >>> s = summarize([("a", 2.0, 2), ("b", 6.0, 2)], {"a": 1, "b": 10})
    >>> s["overall"]["loss"], s["per_category"]["b"]["loss"], s["per_decile"]["1"]["loss"]
    (2.0, 3.0, 1.0)
    """
    total = [0.0, 0, 0]
    cats: dict[str, list] = defaultdict(lambda: [0.0, 0, 0])
    decs: dict[str, list] = defaultdict(lambda: [0.0, 0, 0])
    for category, nll, tokens in rows:
        for acc in (total, cats[category], decs[str(deciles.get(category, 10))]):
            acc[0] += nll
            acc[1] += tokens
            acc[2] += 1
    return {"overall": _entry(*total), "per_category": {k: _entry(*v) for k, v in sorted(cats.items())},
            "per_decile": {k: _entry(*v) for k, v in sorted(decs.items(), key=lambda kv: int(kv[0]))}}


def heldout_loss(model, renderer: ChatRenderer, items: list[EvalItem], deciles: dict[str, int], *,
                 max_length: int = 4096, tokens_per_batch: int = 4096) -> dict | None:
    """Loss of `model` on the targets of `items` (those that have one), rendered with `renderer`'s masks.

    Examples longer than `max_length` are truncated; records that cannot be rendered are counted in `skipped`.
    None when no item has a target.
    """
    convs = [c for c in (it.conversation() for it in items) if c is not None]
    if not convs:
        return None
    examples, rejects, _ = build_examples(convs, renderer, max_length=max_length, truncation="truncate",
                                          on_error="skip")
    losses = token_nll(model, examples, tokens_per_batch=tokens_per_batch)
    out = summarize(((e.meta.get("category", "(none)"), nll, n) for e, (nll, n) in zip(examples, losses)), deciles)
    out["skipped"] = {r["reason"]: sum(x["reason"] == r["reason"] for x in rejects) for r in rejects}
    return out
