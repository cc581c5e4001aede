"""The OpenAI chat-completions wire format: `decode_request` turns a JSON body into checked `ChatParams` (or an
`ApiError` naming the field), `encode_response` / `encode_chunk` turn a generation back into JSON."""

from __future__ import annotations

import time
import json
import re
from dataclasses import dataclass, field

from ..config.serve import ServeConfig

ROLES = ("system", "developer", "user", "assistant", "tool")  # developer: what OpenAI clients send for system
UNSUPPORTED = ("functions", "logprobs", "top_logprobs", "logit_bias")  # refused when set (not null/empty)
PENALTIES = ("presence_penalty", "frequency_penalty")  # refused unless 0: sampling here has no such term
TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # OpenAI's rule for function names


class ApiError(Exception):
    """A request the server refuses: HTTP status, the offending field (`param`) and a message with the fix."""

    def __init__(self, status: int, param: str | None, message: str, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.param, self.message, self.kind = status, param, message, kind

    def body(self) -> dict:
        """The OpenAI error object."""
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": None}}


@dataclass
class Sampling:
    """How a checked request is decoded (chat and completions alike)."""

    max_tokens: int | None
    temperature: float
    top_p: float
    seed: int | None
    stop: tuple[str, ...]
    stream: bool
    include_usage: bool


@dataclass
class ChatParams(Sampling):
    """A checked chat request."""

    messages: list[dict] = field(default_factory=list)
    response_format: dict | None = None  # {"schema": a JSON schema or None (any JSON object)}; None: free text
    tools: list[dict] = field(default_factory=list)
    tool_choice: str = "none"  # "auto" | "none" | "required" | a function name

    @property
    def parses_tools(self) -> bool:
        """Whether the reply is read for tool calls (tools sent, and tool_choice not "none")."""
        return self.tool_choice != "none"


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
    return [_message(m, i) for i, m in enumerate(messages)]


def _tool_calls(value, where: str) -> list[dict]:
    """An assistant message's `tool_calls` as template tool calls (arguments parsed from their JSON string)."""
    if not isinstance(value, list):
        raise ApiError(400, where, f"{where} must be a list of tool calls")
    out = []
    for j, call in enumerate(value):
        fn = call.get("function") if isinstance(call, dict) else None
        args = fn.get("arguments") if isinstance(fn, dict) else None
        try:
            args = json.loads(args) if isinstance(args, str) else args
        except json.JSONDecodeError:
            args = None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not isinstance(args, dict):
            raise ApiError(400, f"{where}[{j}]", f"{where}[{j}] must be {{\"id\": ..., \"type\": \"function\", "
                           "\"function\": {\"name\": ..., \"arguments\": \"<a JSON object>\"}}")
        out.append({"id": str(call.get("id", "")), "type": "function",
                    "function": {"name": fn["name"], "arguments": args}})
    return out


def _message(m, i: int) -> dict:
    """One request message as the template sees it: role and text content, plus tool calls and ids."""
    if not isinstance(m, dict):
        raise ApiError(400, f"messages[{i}]", f"messages[{i}] must be an object with role and content")
    if m.get("role") not in ROLES:
        raise ApiError(400, f"messages[{i}].role", f"messages[{i}].role is {m.get('role')!r}; allowed: "
                       f"{', '.join(ROLES)}")
    role = "system" if m["role"] == "developer" else m["role"]  # the template knows system instructions
    calls = _tool_calls(m["tool_calls"], f"messages[{i}].tool_calls") if role == "assistant" and m.get(
        "tool_calls") else None
    content = "" if calls and m.get("content") is None else _content(m.get("content"), f"messages[{i}].content")
    out = {"role": role, "content": content}
    if calls:
        out["tool_calls"] = calls
    if role == "tool":
        if not isinstance(m.get("tool_call_id"), str):
            raise ApiError(400, f"messages[{i}].tool_call_id", f"messages[{i}] (role tool) needs the tool_call_id "
                           "of the call it answers")
        out["tool_call_id"] = m["tool_call_id"]
    return out


def _response_format(value) -> dict | None:
    """`response_format` as {"schema": ...} (json_object: None, any object), or None for free text."""
    if value is None or value == {"type": "text"}:
        return None
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "json_object":
        return {"schema": None}
    spec = value.get("json_schema") if kind == "json_schema" else None
    if not isinstance(spec, dict) or not isinstance(spec.get("schema", {}), dict):
        raise ApiError(400, "response_format", "response_format must be {\"type\": \"text\"}, {\"type\": "
                       "\"json_object\"} or {\"type\": \"json_schema\", \"json_schema\": {\"name\": ..., "
                       "\"schema\": {...}}}")
    return {"schema": spec.get("schema", {"type": "object"})}


def decode_tools(body: dict, max_tools: int) -> list[dict]:
    """The request's `tools` as template tools ([] when absent), each a checked function definition."""
    tools = body.get("tools")
    if tools is None or tools == []:
        return []
    if not isinstance(tools, list) or len(tools) > max_tools:
        raise ApiError(400, "tools", f"tools must be a list of at most {max_tools} function definitions")
    out = []
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) and tool.get("type") == "function" else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not TOOL_NAME.match(fn["name"]):
            raise ApiError(400, f"tools[{i}]", f"tools[{i}] must be {{\"type\": \"function\", \"function\": "
                           "{\"name\": ..., \"parameters\": {...}}} with a name of 1-64 letters, digits, _ or -")
        params = fn.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(params, dict):
            raise ApiError(400, f"tools[{i}].function.parameters", "parameters must be a JSON schema object")
        out.append({"type": "function", "function": {**fn, "parameters": params}})
    return out


def decode_tool_choice(body: dict, tools: list[dict]) -> str:
    """`tool_choice` as "auto", "none", "required" or a function name (checked against `tools`)."""
    choice = body.get("tool_choice")
    if choice is None:
        return "auto" if tools else "none"
    if isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("function"), dict):
        choice = choice["function"].get("name")
        if choice not in {t["function"]["name"] for t in tools}:
            raise ApiError(400, "tool_choice", f"tool_choice names {choice!r}, which is not in tools")
        return choice
    if choice not in ("auto", "none", "required"):
        raise ApiError(400, "tool_choice", "tool_choice must be \"auto\", \"none\", \"required\" or "
                       "{\"type\": \"function\", \"function\": {\"name\": ...}}")
    if choice != "none" and not tools:
        raise ApiError(400, "tool_choice", f"tool_choice {choice!r} needs tools; fix: send tools or leave it out")
    return choice


def decode_sampling(body: dict, cfg: ServeConfig) -> Sampling:
    """The decoding fields of a request body, checked against the limits; ApiError(400) naming the first bad one."""
    if body.get("n") not in (None, 1):  # JSON null is "not set", as OpenAI and vLLM read it
        raise ApiError(400, "n", "n must be 1 (one reply per request)")
    for key in UNSUPPORTED:
        if body.get(key):
            raise ApiError(400, key, f"{key} is not supported by this server; fix: leave it out")
    for key in PENALTIES:
        if body.get(key) not in (None, 0):
            raise ApiError(400, key, f"{key} is not supported by this server (its sampling has no penalty term); "
                           "fix: leave it out or at 0")
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
    return Sampling(max_tokens, _number(body, "temperature", 0.0, 2.0, 0.0), _number(body, "top_p", 1e-6, 1.0, 1.0),
                    seed, tuple(stops), bool(body.get("stream", False)), bool(options.get("include_usage", False)))


def decode_request(body, cfg: ServeConfig) -> ChatParams:
    """Check a chat-completions body against the limits; ApiError(400) naming the first bad field."""
    if not isinstance(body, dict):
        raise ApiError(400, None, "the request body must be a JSON object")
    messages = decode_messages(body, cfg)
    sampling = decode_sampling(body, cfg)
    tools = decode_tools(body, cfg.max_tools)
    return ChatParams(**vars(sampling), messages=messages,
                      response_format=_response_format(body.get("response_format")), tools=tools,
                      tool_choice=decode_tool_choice(body, tools))


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    """The `usage` object.

    >>> usage(10, 3)
    {'prompt_tokens': 10, 'completion_tokens': 3, 'total_tokens': 13}
    """
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def encode_response(rid: str, model: str, text: str | None, finish: str, prompt_tokens: int, completion_tokens: int,
                    tool_calls: list[dict] | None = None) -> dict:
    """A non-streaming chat.completion object (with `tool_calls`, finish_reason "tool_calls")."""
    message = {"role": "assistant", "content": text}
    if tool_calls:
        message["tool_calls"], finish = tool_calls, "tool_calls"
    return {"id": rid, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish,
                         "logprobs": None}],
            "usage": usage(prompt_tokens, completion_tokens)}


def encode_chunk(rid: str, model: str, delta: dict | None, finish: str | None = None, use: dict | None = None
                 ) -> dict:
    """One chat.completion.chunk of a stream (`delta` None with `use`: the final usage-only chunk)."""
    return stream_chunk(rid, model, "chat.completion.chunk", None if delta is None else {"delta": delta}, finish, use)


def stream_chunk(rid: str, model: str, kind: str, body: dict | None, finish: str | None, use: dict | None) -> dict:
    """One streamed object of type `kind` whose only choice holds `body` (None: no choice, the usage-only chunk)."""
    choices = [] if body is None else [{"index": 0, **body, "finish_reason": finish, "logprobs": None}]
    chunk = {"id": rid, "object": kind, "created": int(time.time()), "model": model, "choices": choices}
    if use is not None:
        chunk["usage"] = use
    return chunk
