"""The engine seam: `sftpipe serve --set serve.engine=URL` is a front that renders, checks, limits, authenticates
and parses, loads no weights, and hands token ids to an engine's `/v1/completions`; here the engine is a second
`sftpipe serve` (the one the other serve tests use). Through the front, replies, streams, usage and JSON-schema
outputs equal the engine's own chat answers; the engine's completions endpoint takes the ids `/v1/render` gives."""

from __future__ import annotations

import json
import os

import openai
import pytest
from openai import OpenAI

from .conftest import API_KEY, LiveServer, free_port

PROMPTS = [[{"role": "user", "content": "What is 12 plus 30?"}],
           [{"role": "system", "content": "Answer in one line."}, {"role": "user", "content": "Hi <|im_end|>"}]]
SCHEMA = {"type": "object", "properties": {"sum": {"type": "integer", "minimum": 0, "maximum": 999}},
          "required": ["sum"], "additionalProperties": False}
MODEL = "serve-t"


def _front(run, engine_url: str) -> LiveServer:
    os.environ["SFTPIPE_ENGINE_API_KEY"] = API_KEY  # the engine's key, which the front sends it
    try:
        return LiveServer(run, "--set", f"serve.engine={engine_url}", "--set", "serve.max_batch=4")
    finally:
        os.environ.pop("SFTPIPE_ENGINE_API_KEY")


@pytest.fixture(scope="module")
def front(live, tiny_run):
    server = _front(tiny_run, live.url)
    yield server
    assert "front for the openai engine at" in server.stop()


def _client(server) -> OpenAI:
    return OpenAI(base_url=server.url, api_key=API_KEY, max_retries=0, timeout=60)


def test_the_front_answers_as_the_engine_does(front, live):
    via, direct = _client(front), _client(live)
    for prompt in PROMPTS:
        got = via.chat.completions.create(model=MODEL, messages=prompt, max_tokens=12)
        want = direct.chat.completions.create(model=MODEL, messages=prompt, max_tokens=12)
        assert got.choices[0].message.content == want.choices[0].message.content
        assert got.choices[0].finish_reason == want.choices[0].finish_reason
        assert (got.usage.prompt_tokens, got.usage.completion_tokens) == \
            (want.usage.prompt_tokens, want.usage.completion_tokens)
        chunks = list(via.chat.completions.create(model=MODEL, messages=prompt, max_tokens=12, stream=True,
                                                  stream_options={"include_usage": True}))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == \
            want.choices[0].message.content
        assert chunks[-1].usage.completion_tokens == want.usage.completion_tokens
    fmt = {"type": "json_schema", "json_schema": {"name": "sum", "schema": SCHEMA}}
    reply = via.chat.completions.create(model=MODEL, messages=PROMPTS[0], max_tokens=40, response_format=fmt)
    assert reply.choices[0].finish_reason == "stop" and set(json.loads(reply.choices[0].message.content)) == {"sum"}


def test_the_engine_completes_the_ids_render_gives(live):
    import httpx2 as httpx

    client = _client(live)
    ids = httpx.post(f"{live.url}/render", json={"messages": PROMPTS[1]},
                     headers={"Authorization": f"Bearer {API_KEY}"}).json()["token_ids"]
    chat = client.chat.completions.create(model=MODEL, messages=PROMPTS[1], max_tokens=10)
    text = client.completions.create(model=MODEL, prompt=ids, max_tokens=10)
    assert text.choices[0].text == chat.choices[0].message.content
    assert text.usage.prompt_tokens == len(ids) == chat.usage.prompt_tokens
    streamed = client.completions.create(model=MODEL, prompt=ids, max_tokens=10, stream=True)
    assert "".join(c.choices[0].text for c in streamed if c.choices) == chat.choices[0].message.content
    for bad in ("What is 1 plus 1?", [10**9], []):
        with pytest.raises(openai.BadRequestError, match="token ids"):
            client.completions.create(model=MODEL, prompt=bad, max_tokens=5)


def test_an_engine_that_is_down_is_a_502_naming_it(tiny_run):
    down = f"http://127.0.0.1:{free_port()}/v1"
    server = _front(tiny_run, down)
    try:
        with pytest.raises(openai.InternalServerError) as err:
            _client(server).chat.completions.create(model=MODEL, messages=PROMPTS[0], max_tokens=5)
        assert err.value.status_code == 502 and down in str(err.value)
    finally:
        server.stop()
