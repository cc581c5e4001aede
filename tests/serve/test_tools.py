"""Tools and structured outputs against a live `sftpipe serve`, driven by the official `openai` client: a tiny run
trained on tool-call traces (the chatml built-in, Hermes `<tool_call>` blocks) calls its tool on its own
(`auto`), forced calls (`required`, a named function) and `response_format` JSON schemas are enforced by the
grammar whatever the model would write, streamed calls arrive as deltas, and bad tools are 400s."""

from __future__ import annotations

import json
import random
from pathlib import Path

import jsonschema
import pytest
from openai import OpenAI

from sftpipe.models import load_tokenizer

from .conftest import API_KEY, LiveServer, train_tiny

TOOLS = [{"type": "function", "function": {
    "name": "get_order", "description": "Look up an order by its id",
    "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]}}},
    {"type": "function", "function": {
        "name": "refund", "description": "Refund an order",
        "parameters": {"type": "object", "properties": {"order_id": {"type": "string"},
                                                        "amount": {"type": "number"}},
                       "required": ["order_id", "amount"]}}}]
REFUND_SCHEMA = {"type": "object", "properties": {"order_id": {"type": "integer", "minimum": 0, "maximum": 99999},
                                                 "refund": {"type": "boolean"},
                                                 "reason": {"type": "string", "maxLength": 20}},
                 "required": ["order_id", "refund", "reason"], "additionalProperties": False}
MODEL = "tools-t"


def _tools_block() -> str:
    """The system text the chatml built-in renders for TOOLS: training conversations carry it as their system
    message, so the trained prompt is token for token the one a request with these tools is served."""
    from sftpipe.render import ChatRenderer
    from sftpipe.templates import load_template

    tok = load_tokenizer("smollm2-135m-instruct")
    text = ChatRenderer(tok, load_template("chatml", tok)).render_text(
        [{"role": "user", "content": "x"}], tools=TOOLS)
    return text.split("<|im_start|>system\n", 1)[1].split("<|im_end|>", 1)[0]


def _trace(rng: random.Random, system: str, i: int) -> dict:
    order = str(rng.randint(1000, 9999))
    return {"id": i, "messages": [
        {"role": "system", "content": system},
        {"role": "user", "content": f"Where is my order {order}?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": f"call_{i}", "type": "function", "function": {"name": "get_order",
                                                                 "arguments": {"order_id": order}}}]},
        {"role": "tool", "tool_call_id": f"call_{i}", "content": '{"status": "shipped"}'},
        {"role": "assistant", "content": f"Order {order} has shipped."}]}


@pytest.fixture(scope="module")
def tool_run(tmp_path_factory) -> Path:
    """runs/tools-t: all weights of a tiny random Llama trained on 16 tool-call traces until it writes them."""
    rng, system = random.Random(0), _tools_block()
    return train_tiny(tmp_path_factory.mktemp("tools-run"), MODEL, [_trace(rng, system, i) for i in range(16)],
                      seed=3, threads=2, overrides=["template=chatml", "train.mode=full", "train.max_steps=100",
                                                    "render.max_length=512", "train.parity_examples=4"])


@pytest.fixture(scope="module")
def client(tool_run):
    server = LiveServer(tool_run, "--set", "serve.max_batch=4", "--set", "serve.max_tools=4")
    yield OpenAI(base_url=server.url, api_key=API_KEY, max_retries=0, timeout=60)
    server.stop()


ASK = [{"role": "user", "content": "Where is my order 4411?"}]


def test_the_trained_run_calls_its_tool_and_reads_the_answer(client):
    reply = client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, max_tokens=60)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_order" and call.id.startswith("call_")
    assert set(json.loads(call.function.arguments)) == {"order_id"}
    assert not choice.message.content
    # the call and its result go back in the history; the run answers in text
    history = ASK + [choice.message.model_dump(exclude_none=True),
                     {"role": "tool", "tool_call_id": call.id, "content": '{"status": "shipped"}'}]
    answer = client.chat.completions.create(model=MODEL, messages=history, tools=TOOLS, max_tokens=30)
    assert answer.choices[0].finish_reason == "stop" and not answer.choices[0].message.tool_calls
    assert "shipped" in answer.choices[0].message.content
    # tool_choice none: the same request gets text, the markup unparsed
    plain = client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, tool_choice="none",
                                           max_tokens=60)
    assert plain.choices[0].message.tool_calls is None and "<tool_call>" in plain.choices[0].message.content


def test_a_streamed_call_arrives_as_a_delta_equal_to_the_whole_reply(client):
    whole = client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, max_tokens=60)
    chunks = list(client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, max_tokens=60,
                                                 stream=True))
    calls = [c for ch in chunks if ch.choices for c in (ch.choices[0].delta.tool_calls or [])]
    assert [(c.index, c.function.name, c.function.arguments) for c in calls] == \
        [(0, t.function.name, t.function.arguments) for t in whole.choices[0].message.tool_calls]
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason] == \
        ["tool_calls"]


@pytest.mark.parametrize("stream", [False, True])
def test_forced_calls_follow_the_schema_whatever_the_model_prefers(client, stream):
    named = {"type": "function", "function": {"name": "refund"}}
    kwargs = dict(model=MODEL, messages=ASK, tools=TOOLS, tool_choice=named, max_tokens=80)
    if stream:
        chunks = client.chat.completions.create(**kwargs, stream=True)
        calls = [c for ch in chunks if ch.choices for c in (ch.choices[0].delta.tool_calls or [])]
    else:
        calls = client.chat.completions.create(**kwargs).choices[0].message.tool_calls
    (call,) = calls  # the trained run would call get_order; the grammar makes it refund
    assert call.function.name == "refund"
    jsonschema.validate(json.loads(call.function.arguments), TOOLS[1]["function"]["parameters"])
    required = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hello"}],
                                              tools=TOOLS, tool_choice="required", max_tokens=80)
    assert required.choices[0].message.tool_calls[0].function.name in {"get_order", "refund"}


def test_json_schema_replies_always_validate(client):
    fmt = {"type": "json_schema", "json_schema": {"name": "refund", "schema": REFUND_SCHEMA, "strict": True}}
    for question in ["Refund order 4411 please", "What is 2 plus 2?", "Hello"]:
        reply = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": question}],
                                               response_format=fmt, max_tokens=80)
        assert reply.choices[0].finish_reason == "stop"
        jsonschema.validate(json.loads(reply.choices[0].message.content), REFUND_SCHEMA)
    free = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hello"}],
                                          max_tokens=20)
    with pytest.raises(json.JSONDecodeError):  # the same run without the grammar writes no JSON
        json.loads(free.choices[0].message.content)
    anything = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hello"}],
                                              response_format={"type": "json_object"}, max_tokens=80).choices[0]
    assert anything.message.content.startswith("{") and not free.choices[0].message.content.startswith("{")
    if anything.finish_reason == "stop":  # a random model may fill one string until max_tokens
        assert isinstance(json.loads(anything.message.content), dict)


@pytest.mark.parametrize("body, param", [
    ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tools[0]"),
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": TOOLS * 3}, "tools"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}}},
     "response_format"),
    ({"response_format": {"type": "xml"}}, "response_format"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id"),
    ({"messages": ASK + [{"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {
        "name": "get_order", "arguments": "{not json"}}]}]}, "messages[1].tool_calls[0]"),
])
def test_bad_tools_and_formats_are_400s_naming_the_field(client, body, param):
    import openai

    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(**{"model": MODEL, "messages": ASK, "max_tokens": 5, **body})
    assert err.value.body["param"] == param, err.value.body


def test_a_run_whose_template_writes_no_tool_calls_refuses_tools(live):
    plain = OpenAI(base_url=live.url, api_key=API_KEY, max_retries=0, timeout=60)
    import openai

    with pytest.raises(openai.BadRequestError, match="writes no tool calls"):
        plain.chat.completions.create(model="serve-t", messages=ASK, tools=TOOLS, max_tokens=5)
    # a JSON reply works on any run: the grammar needs no convention
    fmt = {"type": "json_schema", "json_schema": {"name": "refund", "schema": REFUND_SCHEMA}}
    reply = plain.chat.completions.create(model="serve-t", messages=ASK, max_tokens=80, response_format=fmt)
    assert reply.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(reply.choices[0].message.content), REFUND_SCHEMA)
