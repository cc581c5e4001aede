"""Replies to a list of prompts in one call (eval): the engine's continuous batching over prompts sorted longest
first, so rows that join together pad little."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .engine import Engine, Generation, Request
from .stops import stop_token_ids

if TYPE_CHECKING:
    from ..render import ChatRenderer


@dataclass
class GenerationStats:
    """Throughput of one `generate` call."""

    prompts: int
    new_tokens: int
    seconds: float

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        return {"prompts": self.prompts, "new_tokens": self.new_tokens, "seconds": round(self.seconds, 3),
                "tokens_per_s": round(self.tokens_per_s, 2)}


def run_requests(engine: Engine, requests: list[Request], progress: Callable[[int], None] | None = None
                 ) -> list[Generation]:
    """Every request to completion on `engine`, admitted in list order as rows free up; replies in list order."""
    waiting = deque(enumerate(requests))
    results: list[Generation | None] = [None] * len(requests)
    while waiting or engine.rows:
        finished = []
        if waiting and engine.free > 0:
            finished += engine.admit([waiting.popleft() for _ in range(min(engine.free, len(waiting)))])
        finished += engine.step()
        for key, gen in finished:
            results[key] = gen
        if progress and finished:
            progress(len(finished))
    assert all(r is not None for r in results)
    return results  # type: ignore[return-value]


def generate(model, renderer: ChatRenderer, prompts: list[list[dict]], *, max_new_tokens: int = 256,
             batch_size: int = 16, do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0,
             seed: int = 0, stop: tuple[str, ...] = (), stop_ids: list[int] | None = None,
             progress: Callable[[int], None] | None = None, schemas: list[dict | None] | None = None
             ) -> tuple[list[Generation], GenerationStats]:
    """Replies to `prompts` (template messages) in input order; greedy unless `do_sample` (each prompt then draws
    from its own generator seeded with `seed`, as a served request with that seed does). `schemas`, one per prompt,
    constrains each reply with a schema to one JSON value matching it (`constrain.Grammars`; None: free text)."""
    if batch_size < 1 or max_new_tokens < 1:
        raise ValueError(f"need batch_size >= 1 and max_new_tokens >= 1, got {batch_size}, {max_new_tokens}")
    if schemas is not None and len(schemas) != len(prompts):
        raise ValueError(f"schemas: got {len(schemas)} for {len(prompts)} prompts; fix: pass one per prompt "
                         "(None for a free reply)")
    stops = stop_ids or stop_token_ids(renderer)
    engine = Engine(model, renderer.tokenizer, stops, max_batch=batch_size)
    encoded = [renderer.encode_prompt(p) for p in prompts]
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
    requests = [Request(encoded[i], max_new_tokens, temperature if do_sample else 0.0, top_p, seed, tuple(stop))
                for i in order]
    if schemas is not None and any(s is not None for s in schemas):
        _constrain(requests, [schemas[i] for i in order], model, renderer, stops)
    t0 = time.perf_counter()
    replies = run_requests(engine, requests, progress)
    seconds = time.perf_counter() - t0
    results: list[Generation] = [None] * len(prompts)  # type: ignore[list-item]
    for i, gen in zip(order, replies):
        results[i] = gen
    return results, GenerationStats(len(prompts), sum(g.new_tokens for g in results), seconds)


def _constrain(requests: list[Request], schemas: list[dict | None], model, renderer: ChatRenderer,
               stop_ids: list[int]) -> None:
    """Give each request whose schema is not None a fresh JSON constraint (one llguidance tokenizer for all)."""
    from .constrain import Grammars

    grammars = Grammars(renderer.tokenizer, int(model.config.vocab_size), stop_ids)
    for req, schema in zip(requests, schemas):
        if schema is not None:
            req.constraint = grammars.json(schema)
