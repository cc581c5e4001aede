"""Batched generation with the serving render: `ChatRenderer.encode_prompt`, left padding, length-sorted batches,
stopping on the template's end-of-turn token and the tokenizer's eos.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from ..render import ChatRenderer

_PROBE = "\U000f0020sftpipe-probe\U000f0021"


@dataclass
class Generation:
    """One reply: its text (up to, not including, the stop token), token counts and why it ended."""

    text: str
    new_tokens: int  # generated tokens, the stop token included
    prompt_tokens: int
    finish: str  # "stop" (end-of-turn or eos) | "length" (max_new_tokens reached)


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


def stop_token_ids(renderer: ChatRenderer) -> list[int]:
    """The template's end-of-turn token (the first control token after an assistant reply) and eos, as ids."""
    tok = renderer.tokenizer
    text = renderer.render_text([{"role": "user", "content": "hi"}, {"role": "assistant", "content": _PROBE}])
    closing = text.split(_PROBE, 1)[1]
    found = [(closing.find(t), t) for t in renderer.template.control_tokens if t in closing]
    ids: list[int] = []
    if found:
        ids.append(tok.convert_tokens_to_ids(min(found)[1]))
    eos = tok.eos_token_id
    for e in eos if isinstance(eos, list) else [eos]:
        if e is not None and e not in ids:
            ids.append(e)
    if not ids:
        raise ValueError(f"template {renderer.template.name!r} closes assistant replies with no control token and "
                         "the tokenizer has no eos token, so generation could not stop; fix: set an eos_token")
    return ids


def generate(model, renderer: ChatRenderer, prompts: list[list[dict]], *, max_new_tokens: int = 256,
             batch_size: int = 16, do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0,
             seed: int = 0, progress: Callable[[int], None] | None = None
             ) -> tuple[list[Generation], GenerationStats]:
    """Replies to `prompts` (template messages) in input order, batched; greedy unless `do_sample`."""
    import torch
    from transformers import GenerationConfig

    if batch_size < 1 or max_new_tokens < 1:
        raise ValueError(f"need batch_size >= 1 and max_new_tokens >= 1, got {batch_size}, {max_new_tokens}")
    tok = renderer.tokenizer
    stops = stop_token_ids(renderer)
    pad = tok.pad_token_id if tok.pad_token_id is not None else stops[0]
    encoded = [renderer.encode_prompt(p) for p in prompts]
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=do_sample, eos_token_id=stops,
                              pad_token_id=pad, **({"temperature": temperature, "top_p": top_p} if do_sample else {}))
    device = next(model.parameters()).device
    results: list[Generation | None] = [None] * len(prompts)
    t0 = time.perf_counter()
    if do_sample:
        torch.manual_seed(seed)
    model.eval()
    for start in range(0, len(order), batch_size):  # longest prompts first: each batch pads little
        batch = order[start:start + batch_size]
        width = max(len(encoded[i]) for i in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):
            n = len(encoded[i])
            ids[row, width - n:] = torch.tensor(encoded[i])
            mask[row, width - n:] = 1
        with torch.inference_mode():
            out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                                 generation_config=config)
        for row, i in enumerate(batch):
            new = out[row, width:].tolist()
            end = next((k for k, t in enumerate(new) if t in stops), None)
            kept = new if end is None else new[:end]
            results[i] = Generation(tok.decode(kept, skip_special_tokens=True), len(new) if end is None else end + 1,
                                    len(encoded[i]), "length" if end is None else "stop")
        if progress:
            progress(len(batch))
    seconds = time.perf_counter() - t0
    done = [r for r in results if r is not None]
    assert len(done) == len(prompts)
    return done, GenerationStats(len(prompts), sum(g.new_tokens for g in done), seconds)
