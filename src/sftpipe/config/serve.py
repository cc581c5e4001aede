"""The `serve` section of sftpipe.yaml: where to listen and every limit on a request (imports only pydantic)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import Section


class ServeConfig(Section):
    """`sftpipe serve`: address, batching and request limits (each refused with a 4xx naming the field)."""

    host: str = "127.0.0.1"  # loopback: reachable only from this machine unless you choose otherwise
    port: int = Field(8000, ge=0, le=65535)
    max_body_bytes: int = Field(1_000_000, ge=1024)  # 413 above
    max_messages: int = Field(256, ge=1)
    max_tokens_cap: int = Field(2048, ge=1)  # a request's max_tokens above this is refused
    default_max_tokens: int = Field(512, ge=1)  # when a request names none
    max_stop: int = Field(4, ge=0)  # stop strings per request (OpenAI allows 4)
    max_stop_chars: int = Field(64, ge=1)
    max_tools: int = Field(64, ge=0)  # function definitions per request
    max_batch: int = Field(16, ge=1)  # rows decoded together
    max_queue: int = Field(64, ge=1)  # requests waiting beyond the batch; 429 when full
    prefix_cache: int = Field(8, ge=0)  # recent prompts whose KV is kept, so a shared head (the system prompt)
    # is prefilled once; 0: off
    context: int | None = Field(None, ge=16)  # prompt + reply tokens; default: the model's max_position_embeddings
    # a front for an engine that takes token-id prompts (its /v1 base URL): this server renders, checks, limits,
    # authenticates and parses tools, and the engine decodes (its key, if any, from SFTPIPE_ENGINE_API_KEY)
    engine: str | None = Field(None, pattern=r"^https?://")
    engine_kind: Literal["openai", "llama.cpp"] = "openai"  # openai: vLLM's or sftpipe's /v1/completions
    engine_model: str | None = None  # the model name the engine serves, when it requires one (vLLM)
