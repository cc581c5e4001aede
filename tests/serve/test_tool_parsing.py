"""Tool-call conventions against the templates' own renders: each template (model templates from the hub and
sftpipe's built-ins) writes an assistant turn with tool calls; the convention read off its source parses that text
back to the same calls, whole and streamed a character at a time. The grammar of a forced call compiles for every
convention and whatever it lets through parses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sftpipe.models import load_tokenizer
from sftpipe.serve.tools import CONVENTIONS, ToolStream, call_grammar, convention_of, parse_reply

TEMPLATES = Path(__file__).parents[1] / "assets" / "templates"
BUILTINS = Path(__file__).parents[2] / "src" / "sftpipe" / "templates"
ORDER = {"type": "object", "properties": {"order_id": {"type": "string", "enum": ["4411", "5566"]},
                                         "urgent": {"type": "boolean"}},
         "required": ["order_id", "urgent"], "additionalProperties": False}
REFUND = {"type": "object", "properties": {"amount": {"type": "integer", "minimum": 0, "maximum": 500}},
          "required": ["amount"], "additionalProperties": False}
TOOLS = [{"type": "function", "function": {"name": "get_order", "parameters": ORDER}},
         {"type": "function", "function": {"name": "refund", "parameters": REFUND}}]
CALLS = [{"id": "abcDEF123", "type": "function", "function": {"name": "get_order",
                                                              "arguments": {"order_id": "4411", "urgent": True}}}]
CASES = [(TEMPLATES / "qwen2.5-7b-instruct.jinja", "hermes"), (TEMPLATES / "qwen3-8b.jinja", "hermes"),
         (TEMPLATES / "llama3.1-8b-instruct.jinja", "llama3"), (TEMPLATES / "mistral-7b-instruct-v0.3.jinja",
                                                                 "mistral"),
         (BUILTINS / "chatml.jinja", "hermes"), (BUILTINS / "llama3.jinja", "llama3")]


def _reply_text(source: str) -> str:
    """What the template writes for an assistant turn holding CALLS, between the generation prompt and the turn's
    end (the serving reply the model is trained to generate)."""
    from transformers.utils.chat_template_utils import _compile_jinja_template

    template = _compile_jinja_template(source)
    ask = [{"role": "user", "content": "Where is order 4411?"}]
    kw = {"bos_token": "<s>", "eos_token": "</s>", "tools": TOOLS}
    if "does not render tool schemas" in source:  # sftpipe's llama3 built-in: tools go in the system message
        kw["tools"] = None
    prompt = template.render(messages=ask, add_generation_prompt=True, **kw)
    full = template.render(messages=ask + [{"role": "assistant", "content": "", "tool_calls": CALLS}], **kw)
    assert full.startswith(prompt.rstrip()), "the template rewrote the prompt"
    reply = full[len(prompt):] if full.startswith(prompt) else full[len(prompt.rstrip()):]
    for end in ("<|im_end|>", "<|eot_id|>", "</s>"):
        reply = reply.split(end)[0]
    return reply


@pytest.mark.parametrize("path, name", CASES, ids=[p.stem for p, _ in CASES])
def test_each_template_s_own_tool_calls_parse_back(path, name):
    source = path.read_text()
    conv = convention_of(source)
    assert conv is not None and conv.name == name
    text = _reply_text(source)
    content, calls = parse_reply(conv, text)
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls] == \
        [("get_order", {"order_id": "4411", "urgent": True})], text
    assert not content
    stream = ToolStream(conv)
    deltas = [d for ch in text for d in stream.feed(ch)] + stream.finish()
    streamed = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    assert [(c["index"], c["function"]) for c in streamed] == [(0, calls[0]["function"])]
    assert not "".join(d.get("content", "") for d in deltas).strip()


def test_text_and_broken_calls_stay_content():
    hermes = CONVENTIONS[0]
    assert parse_reply(hermes, "Order 4411 has shipped.") == ("Order 4411 has shipped.", [])
    broken = 'Let me look.\n<tool_call>\n{"name": "get_order", "arguments": {"order_id": 44'
    assert parse_reply(hermes, broken) == (broken, [])
    stream = ToolStream(hermes)
    text = "".join(d.get("content", "") for ch in broken for d in stream.feed(ch)) + \
        "".join(d.get("content", "") for d in stream.finish())
    assert "<tool_call>" in text and text.startswith("Let me look.") and stream.calls == 0


def test_the_named_template_of_a_run_without_tool_calls_has_no_convention():
    assert convention_of((TEMPLATES / "smollm2-135m-instruct.jinja").read_text()) is None


@pytest.mark.parametrize("conv", CONVENTIONS, ids=[c.name for c in CONVENTIONS])
@pytest.mark.parametrize("choice", ["get_order", "required"])
def test_whatever_a_forced_call_grammar_lets_through_parses(conv, choice):
    """Random logits under the grammar (the worst model there is) still give calls that parse and match a tool
    (bounded parameters, so a random walk ends)."""
    from sftpipe.generate.constrain import Grammars

    tok = load_tokenizer("smollm2-135m-instruct")
    grammars = Grammars(tok, len(tok), [tok.eos_token_id])
    for seed in range(3):
        torch.manual_seed(seed)
        constraint = grammars.lark(call_grammar(conv, TOOLS, choice))
        out = []
        while len(out) < 400:
            logits = torch.randn(len(tok))
            constraint.mask(logits)
            token = int(logits.argmax())
            assert constraint.accept(token)
            if token == tok.eos_token_id:
                break
            out.append(token)
        assert constraint.complete, tok.decode(out)
        content, calls = parse_reply(conv, tok.decode(out))
        assert calls and not content
        for call in calls:
            assert call["function"]["name"] in ({"get_order", "refund"} if choice == "required" else {choice})
            args = json.loads(call["function"]["arguments"])
            assert set(args) == set(next(t for t in TOOLS if t["function"]["name"] == call["function"]["name"])[
                "function"]["parameters"]["required"])


def test_a_marker_that_is_a_control_token_is_forced_as_that_token():
    """Mistral's [TOOL_CALLS] is one control token: a forced call starts with it, not with its text spelled out."""
    from sftpipe.generate.constrain import Grammars

    tok = load_tokenizer("smollm2-135m-instruct")
    tok.add_special_tokens({"additional_special_tokens": ["[TOOL_CALLS]"]})
    marker = tok.convert_tokens_to_ids("[TOOL_CALLS]")
    mistral = next(c for c in CONVENTIONS if c.name == "mistral")
    grammars = Grammars(tok, len(tok), [tok.eos_token_id])
    torch.manual_seed(0)
    constraint = grammars.lark(call_grammar(mistral, TOOLS, "refund", marker))
    out = []
    while not out or out[-1] != tok.eos_token_id:
        logits = torch.randn(len(tok))
        constraint.mask(logits)
        out.append(int(logits.argmax()))
        assert constraint.accept(out[-1]) and len(out) < 200
    assert out[0] == marker
    _, calls = parse_reply(mistral, tok.decode(out[:-1], skip_special_tokens=False))
    assert [c["function"]["name"] for c in calls] == ["refund"]
