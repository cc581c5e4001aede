"""The decoding core: a batch of rows on one KV cache, right-aligned (each row left-padded), that admits new
requests whenever rows finish (continuous batching). A newcomer is prefilled, its cache padded on the left to the
batch's length (or the batch's to its length) and stacked on; finished rows leave and all-padding columns are cut.

Greedy rows take the argmax; sampled rows draw with their own seeded generator, so a reply does not depend on what
else is in the batch. Models whose cache is not a plain full-attention cache (sliding windows) run one row at a time.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .prefix import PrefixCache
from .stops import find_stop, safe_length


@dataclass
class Request:
    """One prompt to complete: its token ids and how to decode it. `temperature` 0 is greedy."""

    ids: list[int]
    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    on_text: Callable[[str], None] | None = None  # streaming: each new piece of reply text, in order
    on_done: Callable[[Generation], None] | None = None
    cancelled: bool = False  # set by the caller (client gone); the row leaves at the next step
    constraint: Any = None  # a `constrain.Constraint`: only tokens its grammar allows are picked
    keep_special: bool = False  # the text keeps control tokens (tool-call markers such as Mistral's [TOOL_CALLS])


@dataclass
class Generation:
    """One reply: its text (up to, not including, the stop), token counts and why it ended."""

    text: str
    new_tokens: int  # generated tokens, the stop token included
    prompt_tokens: int
    finish: str  # "stop" (end-of-turn, eos or a stop string) | "length" (max_new_tokens) | "cancelled"
    token_ids: list[int] = field(default_factory=list)


class _Row:
    """A request being decoded: the tokens so far, the next token to feed, what was streamed."""

    def __init__(self, key, req: Request):
        import torch

        self.key, self.req, self.out, self.sent, self.gen = key, req, [], 0, None
        if req.temperature > 0:
            self.gen = torch.Generator().manual_seed(req.seed if req.seed is not None
                                                     else int.from_bytes(os.urandom(8), "little") >> 1)


def _pick(logits, row: _Row) -> int:
    """A sampled token for one row: temperature, then the top-p nucleus (at least one token kept)."""
    import torch

    probs = torch.softmax(logits.float() / row.req.temperature, dim=-1)
    if row.req.top_p < 1.0:
        sorted_p, order = probs.sort(descending=True)
        drop = sorted_p.cumsum(-1) - sorted_p > row.req.top_p
        sorted_p[drop] = 0.0
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_p)
    return int(torch.multinomial(probs, 1, generator=row.gen))


def _constrained(logits, row: _Row) -> int:
    """The row's next token among those its grammar allows (greedy or sampled), then fed to the grammar."""
    scores = logits.clone()
    row.req.constraint.mask(scores)
    token = _pick(scores, row) if row.gen is not None else int(scores.argmax())
    row.req.constraint.accept(token)
    return token


def _pad_left(t, n: int, dim: int):
    """`t` with `n` zero columns prepended along `dim`."""
    import torch

    if n == 0:
        return t
    shape = list(t.shape)
    shape[dim] = n
    return torch.cat([t.new_zeros(shape), t], dim=dim)


class Engine:
    """Continuous-batching decoder over `model`: `admit` requests while `free` > 0, `step` until none are left."""

    def __init__(self, model, tokenizer, stop_ids: list[int], *, max_batch: int = 16, pad_id: int | None = None,
                 prefix_cache: int = 0):
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer

        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.model, self.tok, self.stop_ids = model.eval(), tokenizer, set(stop_ids)
        self.pad_id = pad_id if pad_id is not None else (tokenizer.pad_token_id if tokenizer.pad_token_id
                                                         is not None else stop_ids[0])
        self.device = next(model.parameters()).device
        layers = DynamicCache(config=model.config).layers
        self.slack = all(type(x) is DynamicLayer for x in layers)  # plain full attention: SlackLayer storage
        self.max_batch = max_batch if self.slack else 1
        self.rows: list[_Row] = []
        self.cache = None
        self.mask = None  # (rows, columns) 1 = real token, 0 = left padding
        # the heads of the last `prefix_cache` prompts, reused by prompts that start the same way (plain caches)
        self.prefix = PrefixCache(prefix_cache) if prefix_cache and self.slack else None

    @property
    def free(self) -> int:
        """How many more requests the batch takes now."""
        return self.max_batch - len(self.rows)

    def admit(self, items: list[tuple[object, Request]]) -> list[tuple[object, Generation]]:
        """Prefill `(key, request)` items and join them to the batch; returns any that finished at once. Items
        whose prompt starts with a cached head prefill only the rest, one by one; the others together."""
        if self.prefix is None:
            return self._prefill(items)
        cold, finished = [], []
        for key, req in items:
            n, head = self.prefix.lookup(req.ids)
            if n:
                finished += self._prefill_after(key, req, n, head)
            else:
                cold.append((key, req))
        return self._prefill(cold) + finished

    def _prefill_after(self, key, req: Request, n: int, head: list[tuple]) -> list[tuple[object, Generation]]:
        """Prefill what `req` adds to its cached `n`-token head, and join it to the batch."""
        import torch
        from transformers import DynamicCache

        from .kv import SlackLayer

        cache = DynamicCache(config=self.model.config)
        cache.layers = [SlackLayer([(k, v)], n) for k, v in head]
        total = len(req.ids)
        with torch.inference_mode():
            out = self.model(input_ids=torch.tensor([req.ids[n:]], device=self.device),
                             attention_mask=torch.ones((1, total), dtype=torch.long, device=self.device),
                             position_ids=torch.arange(n, total, device=self.device)[None], past_key_values=cache,
                             use_cache=True, logits_to_keep=1)
        self.prefix.add(req.ids, [(x.keys, x.values) for x in out.past_key_values.layers])
        rows = [_Row(key, req)]
        self._join(out.past_key_values, torch.ones((1, total), dtype=torch.long, device=self.device), rows)
        return self._advance(out.logits[:, -1, :], rows)

    def _prefill(self, items: list[tuple[object, Request]]) -> list[tuple[object, Generation]]:
        """Prefill `(key, request)` items together (left-padded) and join them to the batch."""
        import torch

        if not items:
            return []
        width = max(len(r.ids) for _, r in items)
        ids = torch.full((len(items), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        for k, (_, r) in enumerate(items):
            ids[k, width - len(r.ids):] = torch.tensor(r.ids, dtype=torch.long)
            mask[k, width - len(r.ids):] = 1
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            out = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                             position_ids=pos.to(self.device), use_cache=True, logits_to_keep=1)
        rows = [_Row(key, r) for key, r in items]
        if self.prefix is not None:  # each prompt's columns, padding cut, before the batch's cache takes them
            for k, (_, r) in enumerate(items):
                self.prefix.add(r.ids, [(x.keys[k:k + 1, :, width - len(r.ids):], x.values[k:k + 1, :,
                                                                                           width - len(r.ids):])
                                        for x in out.past_key_values.layers])
        self._join(out.past_key_values, mask.to(self.device), rows)
        return self._advance(out.logits[:, -1, :], rows)

    def step(self) -> list[tuple[object, Generation]]:
        """One decoding step for every row; returns the rows that finished."""
        import torch

        if not self.rows:
            return []
        ids = torch.tensor([[r.out[-1]] for r in self.rows], dtype=torch.long, device=self.device)
        self.mask = torch.cat([self.mask, self.mask.new_ones((len(self.rows), 1))], dim=1)
        pos = self.mask.sum(-1, keepdim=True) - 1
        with torch.inference_mode():
            out = self.model(input_ids=ids, attention_mask=self.mask, position_ids=pos,
                             past_key_values=self.cache, use_cache=True)
        self.cache = out.past_key_values
        return self._advance(out.logits[:, -1, :], self.rows)

    def _join(self, cache, mask, rows: list[_Row]) -> None:
        from .kv import SlackLayer

        if not self.rows:
            if self.slack:
                cache.layers = [SlackLayer([(x.keys, x.values)], mask.shape[1]) for x in cache.layers]
            self.cache, self.mask, self.rows = cache, mask, rows
            return
        width = max(mask.shape[1], self.mask.shape[1])
        self.cache.layers = [SlackLayer([(old.keys, old.values), (new.keys, new.values)], width)
                             for old, new in zip(self.cache.layers, cache.layers)]
        self.mask = torch_cat0(_pad_left(self.mask, width - self.mask.shape[1], 1),
                               _pad_left(mask, width - mask.shape[1], 1))
        self.rows = self.rows + rows

    def _advance(self, logits, rows: list[_Row]) -> list[tuple[object, Generation]]:
        """Append one token to each of `rows` (the last len(rows) rows of the batch); settle the finished ones."""
        greedy = logits.argmax(-1).tolist()
        done: list[tuple[_Row, str, str | None]] = []
        for k, row in enumerate(rows):
            if row.req.cancelled:
                done.append((row, "cancelled", None))
                continue
            if row.req.constraint is not None:
                token = _constrained(logits[k], row)
            else:
                token = _pick(logits[k], row) if row.gen is not None else greedy[k]
            row.out.append(token)
            if token in self.stop_ids:
                done.append((row, "stop", None))
                continue
            text = None
            if row.req.stop or row.req.on_text:
                text = self.tok.decode(row.out, skip_special_tokens=not row.req.keep_special)
                cut = find_stop(text, row.req.stop, max(0, row.sent - 64)) if row.req.stop else None
                if cut is not None:
                    done.append((row, "stop", text[:cut]))
                    continue
            if len(row.out) >= row.req.max_new_tokens:
                done.append((row, "length", text))
                continue
            if row.req.on_text:
                n = safe_length(text, row.req.stop)
                if n > row.sent:
                    row.req.on_text(text[row.sent:n])
                    row.sent = n
        finished = [self._finish(row, finish, text) for row, finish, text in done]
        if done:
            self._drop({id(row) for row, _, _ in done})
        return finished

    def _finish(self, row: _Row, finish: str, text: str | None) -> tuple[object, Generation]:
        kept = row.out[:-1] if finish == "stop" and row.out and row.out[-1] in self.stop_ids else row.out
        if text is None:
            text = self.tok.decode(kept, skip_special_tokens=not row.req.keep_special)
        if row.req.on_text and finish != "cancelled" and len(text) > row.sent:
            row.req.on_text(text[row.sent:])
        gen = Generation(text, len(row.out), len(row.req.ids), finish, list(row.out))
        if row.req.on_done:
            row.req.on_done(gen)
        return row.key, gen

    def _drop(self, gone: set[int]) -> None:
        """Remove finished rows from the batch and cut columns that are padding in every remaining row."""
        import torch

        keep = [k for k, r in enumerate(self.rows) if id(r) not in gone]
        self.rows = [self.rows[k] for k in keep]
        if not keep:
            self.cache = self.mask = None
            return
        index = torch.tensor(keep, device=self.mask.device)
        self.mask = self.mask.index_select(0, index)
        lead = int((self.mask.cumsum(-1) == 0).sum(-1).min())
        self.mask = self.mask[:, lead:]
        assert self.slack, "only plain full-attention caches hold more than one row"
        for layer in self.cache.layers:
            layer.select(index, lead)


def torch_cat0(a, b):
    """Stack two tensors along the batch dimension."""
    import torch

    return torch.cat([a, b], dim=0)
