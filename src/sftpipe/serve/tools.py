"""Tool calling for the chat-completions API: the request's `tools` and `tool_choice` checked, the run's tool-call
convention read off its template, the grammar a forced call (`required` or a named function) is decoded under,
and the reply parsed back into OpenAI `tool_calls`, whole or as stream deltas.

Parsing uses transformers' declarative response parser (`transformers.utils.chat_parsing`), one response template
per convention, as `transformers serve` does:
- hermes: `<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>` (Qwen 2.5/3, Hermes, sftpipe's chatml);
- llama3: the whole reply is `{"name": ..., "parameters": {...}}` (Llama 3.1+, sftpipe's llama3);
- mistral: `[TOOL_CALLS] [{"name": ..., "arguments": {...}}, ...]` (Mistral v0.3).
"""

from __future__ import annotations

import json
import secrets
import string
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Convention:
    """How one template family writes tool calls: the marker in its template, its response template (for the
    parser) and the key its calls hold arguments under."""

    name: str
    marker: str
    response_template: dict
    arguments_key: str = "arguments"
    call_open: str = ""  # the text before a call (hermes) or before the list of calls (mistral)
    call_close: str = ""
    is_list: bool = False  # all calls in one JSON list (mistral)


def _template(anchor: str, tool_calls: dict) -> dict:
    # a think block (Qwen 3 writes an empty one before calls) is reasoning, neither content nor a call
    think = {"open": "<think>", "close": "</think>", "content": "text"}
    return {"defaults": {"role": "assistant"}, "start_anchor": anchor,
            "fields": {"reasoning_content": think, "tool_calls": tool_calls, "content": {"content": "text"}}}


CONVENTIONS = (
    Convention("hermes", "<tool_call>", _template("<|im_start|>assistant\n", {
        "open_pattern": r"\s*<tool_call>", "close": "</tool_call>", "repeats": True, "content": "json",
        "transform": {"type": "function", "function": "{content}"}}),
        call_open="<tool_call>\n", call_close="\n</tool_call>"),
    Convention("mistral", "[TOOL_CALLS]", _template("[/INST]", {
        "open_pattern": r"\s*\[TOOL_CALLS\]\s*", "content": "json", "transform_each": True,
        "transform": {"type": "function", "function": {"name": "{name}", "arguments": "{arguments}"}}}),
        call_open="[TOOL_CALLS] ", is_list=True),
    Convention("llama3", '"parameters": ', _template("<|start_header_id|>assistant<|end_header_id|>\n\n", {
        "open_pattern": r"^\s*(?:<\|python_tag\|>)?(?=\{\s*\"name\")", "content": "json",
        "transform": {"type": "function", "function": {"name": "{content.name}",
                                                       "arguments": "{content.parameters}"}}}),
        arguments_key="parameters"),
)


def convention_of(template_source: str) -> Convention | None:
    """The tool-call convention a chat template writes, read off its source (None: it renders no tool calls)."""
    return next((c for c in CONVENTIONS if c.marker in template_source), None)


def _literal(text: str, conv: Convention, marker_id: int | None) -> str:
    """`text` as a Lark literal; its leading marker as the control token `marker_id` when it is one (a literal
    would spell the marker in plain-text tokens, which the model never wrote)."""
    if marker_id is not None and text.startswith(conv.marker):
        rest = text[len(conv.marker):]
        return f"<[{marker_id}]>" + (f" {json.dumps(rest)}" if rest else "")
    return json.dumps(text)


def call_grammar(conv: Convention, tools: list[dict], choice: str, marker_id: int | None = None) -> str:
    """The Lark grammar (llguidance) of a reply that is only tool calls: one call to `choice` when it names a
    function, one or more calls to any tool when it is "required". `marker_id`: the convention's marker is that
    control token (Mistral's [TOOL_CALLS])."""
    from ..generate.constrain import with_layout

    fns = [t["function"] for t in tools if choice == "required" or t["function"]["name"] == choice]
    calls = [{"type": "object", "properties": {"name": {"const": f["name"]}, conv.arguments_key: f["parameters"]},
              "required": ["name", conv.arguments_key], "additionalProperties": False} for f in fns]
    one = calls[0] if len(calls) == 1 else {"anyOf": calls}
    if conv.is_list:
        schema = {"type": "array", "items": one, "minItems": 1, **({"maxItems": 1} if choice != "required" else {})}
        return (f"start: {_literal(conv.call_open, conv, marker_id)} body\n"
                f"body: %json {json.dumps(with_layout(schema))}\n")
    call = " ".join([_literal(conv.call_open, conv, marker_id)] * bool(conv.call_open) + ["body"]
                    + [json.dumps(conv.call_close)] * bool(conv.call_close))
    many = ' ("\\n" call)*' if choice == "required" and conv.call_close else ""  # llama3: one JSON per reply
    return f"start: call{many}\ncall: {call}\nbody: %json {json.dumps(with_layout(one))}\n"


def call_id(conv: Convention) -> str:
    """A new tool-call id (Mistral's templates demand 9 letters or digits)."""
    if conv.name == "mistral":
        return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(9))
    return f"call_{secrets.token_hex(12)}"


def _openai_call(conv: Convention, call: dict) -> dict:
    fn = call["function"]
    args = fn.get("arguments", {})
    return {"id": call_id(conv), "type": "function",
            "function": {"name": str(fn.get("name")),
                         "arguments": args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)}}


def _calls(value: Any) -> list[dict]:
    return [value] if isinstance(value, dict) else list(value or [])


def parse_reply(conv: Convention, text: str) -> tuple[str | None, list[dict]]:
    """(content, OpenAI tool_calls) of a whole reply; a reply whose calls do not parse is all content."""
    from transformers.utils.chat_parsing import parse_response

    try:
        parsed = parse_response(text, conv.response_template, prefix="")
    except (ValueError, KeyError):
        return text, []
    calls = [_openai_call(conv, c) for c in _calls(parsed.get("tool_calls"))]
    return (parsed.get("content") or None) if calls else text, calls


class ToolStream:
    """A streamed reply turned into chat-completion deltas: content as it comes, each tool call whole once its
    closing marker arrives. If a call does not parse, the rest is streamed as content."""

    def __init__(self, conv: Convention):
        from transformers.utils.chat_parsing import ResponseParser

        self.conv, self.parser, self.raw, self.calls, self.failed = conv, ResponseParser(conv.response_template,
                                                                                         prefix=""), "", 0, False

    def feed(self, piece: str) -> list[dict]:
        """Deltas for the next piece of reply text."""
        return self._run(lambda: self.parser.feed(piece), piece)

    def finish(self) -> list[dict]:
        """Deltas for whatever the parser held back until the end."""
        return self._run(lambda: self.parser.finalize()[1], "")

    def _run(self, step, piece: str) -> list[dict]:
        if self.failed:
            return [{"content": piece}] if piece else []
        self.raw += piece
        try:
            events = step()
        except (ValueError, KeyError):  # a call that is not JSON: show what the model wrote
            self.failed = True
            start = self.raw.rfind(self.conv.call_open.strip()) if self.conv.call_open else 0
            return [{"content": self.raw[max(start, 0):]}]
        deltas = []
        for e in events:
            if e["field"] == "content" and e["type"] == "region_chunk" and e["text"]:
                deltas.append({"content": e["text"]})
            elif e["field"] == "tool_calls" and e["type"] == "region_close":
                for call in _calls(e["value"]):
                    deltas.append({"tool_calls": [{"index": self.calls, **_openai_call(self.conv, call)}]})
                    self.calls += 1
        return deltas
