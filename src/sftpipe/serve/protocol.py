"""The OpenAI chat-completions wire format: `decode_request` turns a JSON body into checked `ChatParams` (or an
`ApiError` naming the field), `encode_response` / `encode_chunk` turn a generation back into JSON."""

from __future__ import annotations

import time
from dataclasses import dataclass

from ..config.serve import ServeConfig

ROLES = ("system", "developer", "user", "assistant")  # developer: what current OpenAI clients send for system
UNSUPPORTED = ("tools", "functions", "logprobs", "top_logprobs", "logit_bias")  # refused when set (not null/empty)
PENALTIES = ("presence_penalty", "frequency_penalty")  # refused unless 0: sampling here has no such term


class ApiError(Exception):
    """A request the server refuses: HTTP status, the offending field (`param`) and a message with the fix."""

    def __init__(self, status: int, param: str | None, message: str, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.param, self.message, self.kind = status, param, message, kind

    def body(self) -> dict:
        """The OpenAI error object."""
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": None}}


@dataclass
class ChatParams:
    """A checked chat request."""

    messages: list[dict]
    max_tokens: int | None
    temperature: float
    top_p: float
    seed: int | None
    stop: tuple[str, ...]
    stream: bool
    include_usage: bool


def _number(body: dict, key: str, lo: float, hi: float, default: float) -> float:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise ApiError(400, key, f"{key} must be a number from {lo} to {hi}, got {value!r}")
    return float(value)


def _content(value, where: str) -> str:
    """Message content as one string: a string, or text parts joined with nothing (as the training render does)."""
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise ApiError(400, where, f"{where} must be a string or a list of text parts, got {type(value).__name__}")
    texts = []
    for j, part in enumerate(value):
        if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise ApiError(400, f"{where}[{j}]", f"{where}[{j}] must be {{\"type\": \"text\", \"text\": \"...\"}} "
                           "(this server takes text only)")
        texts.append(part["text"])
    return "".join(texts)


def decode_messages(body: dict, cfg: ServeConfig) -> list[dict]:
    """The `messages` of a request as template messages, each checked (role, content)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "messages", "messages must be a non-empty list of {role, content} objects")
    if len(messages) > cfg.max_messages:
        raise ApiError(400, "messages", f"messages has {len(messages)} entries; this server takes at most "
                       f"{cfg.max_messages}")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise ApiError(400, f"messages[{i}]", f"messages[{i}] must be an object with role and content")
        if m.get("role") not in ROLES:
            raise ApiError(400, f"messages[{i}].role", f"messages[{i}].role is {m.get('role')!r}; allowed: "
                           f"{', '.join(ROLES)}")
        role = "system" if m["role"] == "developer" else m["role"]  # the template knows system instructions
        out.append({"role": role, "content": _content(m.get("content"), f"messages[{i}].content")})
    return out


def decode_request(body, cfg: ServeConfig) -> ChatParams:
    """Check a chat-completions body against the limits; ApiError(400) naming the first bad field."""
    if not isinstance(body, dict):
        raise ApiError(400, None, "the request body must be a JSON object")
    messages = decode_messages(body, cfg)
    if body.get("n") not in (None, 1):  # JSON null is "not set", as OpenAI and vLLM read it
        raise ApiError(400, "n", "n must be 1 (one reply per request)")
    for key in UNSUPPORTED:
        if body.get(key):
            raise ApiError(400, key, f"{key} is not supported by this server; fix: leave it out")
    for key in PENALTIES:
        if body.get(key) not in (None, 0):
            raise ApiError(400, key, f"{key} is not supported by this server (its sampling has no penalty term); "
                           "fix: leave it out or at 0")
    response_format = body.get("response_format")
    if response_format not in (None, {"type": "text"}):
        raise ApiError(400, "response_format", "response_format other than {\"type\": \"text\"} is not enforced by "
                       "this server, so a JSON reply would not be guaranteed; fix: leave it out and ask for JSON "
                       "in the messages")
    field = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = body.get(field)
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int)
                                   or not 1 <= max_tokens <= cfg.max_tokens_cap):
        raise ApiError(400, field, f"{field} must be an integer from 1 to {cfg.max_tokens_cap} (the server's "
                       f"cap), got {max_tokens!r}")
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else stop if stop is not None else []
    if not isinstance(stops, list) or len(stops) > cfg.max_stop or not all(
            isinstance(s, str) and 0 < len(s) <= cfg.max_stop_chars for s in stops):
        raise ApiError(400, "stop", f"stop must be a string or a list of at most {cfg.max_stop} non-empty strings "
                       f"of at most {cfg.max_stop_chars} characters")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63):
        raise ApiError(400, "seed", f"seed must be a non-negative integer, got {seed!r}")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise ApiError(400, "stream_options", "stream_options must be an object")
    return ChatParams(messages, max_tokens, _number(body, "temperature", 0.0, 2.0, 0.0),
                      _number(body, "top_p", 1e-6, 1.0, 1.0), seed, tuple(stops), bool(body.get("stream", False)),
                      bool(options.get("include_usage", False)))


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    """The `usage` object.

    >>> usage(10, 3)
    {'prompt_tokens': 10, 'completion_tokens': 3, 'total_tokens': 13}
    """
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def encode_response(rid: str, model: str, text: str, finish: str, prompt_tokens: int, completion_tokens: int
                    ) -> dict:
    """A non-streaming chat.completion object."""
    return {"id": rid, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish,
                         "logprobs": None}],
            "usage": usage(prompt_tokens, completion_tokens)}


def encode_chunk(rid: str, model: str, delta: dict | None, finish: str | None = None, use: dict | None = None
                 ) -> dict:
    """One chat.completion.chunk of a stream (`delta` None with `use`: the final usage-only chunk)."""
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]
    chunk = {"id": rid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
             "choices": choices}
    if use is not None:
        chunk["usage"] = use
    return chunk
