"""`POST /v1/completions` with token ids, the engine side of the seam: a front (another `sftpipe serve`, or any
client) that rendered the prompt itself sends the ids, as it would to vLLM. `decode_completion` checks a body
into `CompletionParams`; `encode_completion` / `encode_completion_chunk` write OpenAI text_completion objects.

Only token-id prompts are taken: a text prompt would be tokenized without the chat template, which is what the
chat endpoint exists to prevent."""

from __future__ import annotations

import time
from dataclasses import dataclass

from ..config.serve import ServeConfig
from .protocol import ApiError, Sampling, decode_sampling, stream_chunk, usage


@dataclass
class CompletionParams(Sampling):
    """A checked completions request: the prompt's ids, a grammar spec ({"json": ...} or {"grammar": ...}, vLLM's
    `structured_outputs`) and whether control tokens stay in the text."""

    ids: list[int] | None = None
    structured: dict | None = None
    keep_special: bool = False


def _ids(prompt, vocab: int) -> list[int]:
    """The prompt as a list of token ids (a list of ids, or a batch of exactly one)."""
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], list):
        prompt = prompt[0]
    if not isinstance(prompt, list) or not prompt or not all(
            isinstance(i, int) and not isinstance(i, bool) and 0 <= i < vocab for i in prompt):
        raise ApiError(400, "prompt", f"prompt must be a non-empty list of token ids from 0 to {vocab - 1}; this "
                       "endpoint takes ids only (fix: render chats with /v1/chat/completions, or send the ids "
                       "/v1/render gives)")
    return prompt


def _structured(value) -> dict | None:
    """vLLM's `structured_outputs`: {"json": schema} or {"grammar": a Lark grammar}, or None."""
    if value is None:
        return None
    if not isinstance(value, dict) or len(value) != 1 or not (
            isinstance(value.get("json"), dict) or isinstance(value.get("grammar"), str)):
        raise ApiError(400, "structured_outputs", "structured_outputs must be {\"json\": <JSON schema>} or "
                       "{\"grammar\": \"<Lark grammar>\"}")
    return value


def decode_completion(body, cfg: ServeConfig, vocab: int) -> CompletionParams:
    """Check a completions body; ApiError(400) naming the first bad field."""
    if not isinstance(body, dict):
        raise ApiError(400, None, "the request body must be a JSON object")
    ids = _ids(body.get("prompt"), vocab)
    skip = body.get("skip_special_tokens", True)
    if not isinstance(skip, bool):
        raise ApiError(400, "skip_special_tokens", "skip_special_tokens must be true or false")
    sampling = decode_sampling(body, cfg)
    return CompletionParams(**vars(sampling), ids=ids, structured=_structured(body.get("structured_outputs")),
                            keep_special=not skip)


def encode_completion(rid: str, model: str, text: str, finish: str, prompt_tokens: int, completion_tokens: int
                      ) -> dict:
    """A non-streaming text_completion object."""
    return {"id": rid, "object": "text_completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}],
            "usage": usage(prompt_tokens, completion_tokens)}


def encode_completion_chunk(rid: str, model: str, text: str | None, finish: str | None = None,
                            use: dict | None = None) -> dict:
    """One streamed text_completion chunk (`text` None with `use`: the final usage-only chunk)."""
    return stream_chunk(rid, model, "text_completion", None if text is None else {"text": text}, finish, use)
