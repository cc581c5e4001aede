"""The OpenAI-compatible app: `POST /v1/chat/completions` (JSON or SSE stream, tools, structured outputs),
`POST /v1/completions` (token-id prompts: the engine side of a front), `POST /v1/render` (the prompt text and ids
the model sees), `GET /v1/models`, `GET /health`. A chat request goes decode_request -> render -> its grammar, if
any -> the worker (the built-in engine, or `generate.remote` handing ids to an engine behind this front) -> tool
calls parsed -> encode_response."""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import uuid
from contextlib import asynccontextmanager

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse

from ..generate import Request as GenRequest
from ..config.serve import ServeConfig
from .completions import decode_completion, encode_completion, encode_completion_chunk
from .load import Served
from .protocol import (ApiError, Sampling, decode_messages, decode_request, decode_tools, encode_chunk,
                       encode_response, usage)
from .replies import Replies
from .tools import ToolStream, call_grammar, convention_of, parse_reply


async def _read_json(request: Request, cfg: ServeConfig):
    """The body as JSON, refused with 413 past `max_body_bytes` (declared or streamed)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > cfg.max_body_bytes:
        raise ApiError(413, "body", f"the body has {declared} bytes; this server takes at most {cfg.max_body_bytes}")
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > cfg.max_body_bytes:
            raise ApiError(413, "body", f"the body is over {cfg.max_body_bytes} bytes, this server's limit")
    try:
        return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ApiError(400, "body", f"the body is not valid JSON: {e}") from None


def build_app(served: Served, worker, cfg: ServeConfig, api_key: str | None = None) -> FastAPI:
    """The FastAPI app serving `served` through `worker` (a `Worker` or a `RemoteWorker`, stopped with the app)."""
    @asynccontextmanager
    async def lifespan(_):
        yield
        worker.stop()

    app = FastAPI(title=f"sftpipe serve {served.name}", docs_url=None, redoc_url=None, openapi_url=None,
                  lifespan=lifespan)
    context = cfg.context or int(getattr(served.config, "max_position_embeddings", 2048))
    vocab = int(served.config.vocab_size)
    replies = Replies(worker)
    renderer, tok = served.renderer, served.tokenizer
    convention = convention_of(renderer.template.source)
    # a marker that is a control token (Mistral's [TOOL_CALLS]) is kept in the text the parser reads
    keep_special = convention is not None and convention.marker in tok.all_special_tokens
    marker_id = tok.convert_tokens_to_ids(convention.marker) if keep_special else None
    grammars = []  # the llguidance tokenizer, built on the first constrained request (about a second)

    async def constraint(spec: dict | None, param: str):
        """The compiled grammar of `spec` ({"json": schema} or {"grammar": lark}); None for free text."""
        from ..generate.constrain import GrammarError, Grammars

        if spec is None:
            return None
        if not grammars:
            grammars.append(await asyncio.to_thread(Grammars, tok, vocab, served.stop_ids))
        try:
            if "json" in spec:
                return await asyncio.to_thread(grammars[0].json, spec["json"])
            return await asyncio.to_thread(grammars[0].lark, spec["grammar"])
        except GrammarError as e:
            raise ApiError(400, param, f"{param}: the schema cannot be enforced: {e}") from None

    def budget(ids: list[int], params: Sampling) -> int:
        """How many tokens the reply may take; 400 when the prompt, or the prompt and max_tokens, overflow."""
        if len(ids) >= context:
            raise ApiError(400, "messages", f"the prompt has {len(ids)} tokens; the context holds {context} "
                           "(prompt + reply); fix: send fewer or shorter messages")
        if params.max_tokens is not None and len(ids) + params.max_tokens > context:  # as OpenAI and vLLM do
            raise ApiError(400, "max_tokens", f"the prompt has {len(ids)} tokens and max_tokens asks for "
                           f"{params.max_tokens} more, but the context holds {context}; fix: ask for at most "
                           f"{context - len(ids)} tokens, or send a shorter prompt")
        return min(params.max_tokens or cfg.default_max_tokens, context - len(ids))

    def check_model(body: dict) -> None:
        if body.get("model") not in (None, served.name):
            raise ApiError(404, "model", f"model {body.get('model')!r} is not served here; this server serves "
                           f"{served.name!r}", "not_found_error")

    def request_for(ids: list[int], params: Sampling, grammar, keep: bool) -> GenRequest:
        return GenRequest(ids, budget(ids, params), params.temperature, params.top_p, params.seed, params.stop,
                          constraint=grammar, keep_special=keep)

    @app.exception_handler(ApiError)
    async def _api_error(_, exc: ApiError):
        return JSONResponse(exc.body(), status_code=exc.status)

    async def _auth(request: Request) -> None:
        # a dependency, not an HTTP middleware: Starlette's BaseHTTPMiddleware hides a client's disconnect from
        # the endpoint, which must see it to stop decoding
        given = request.headers.get("authorization", "")
        if api_key and not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
            raise ApiError(401, "authorization", "missing or wrong API key; fix: send the header "
                           "'Authorization: Bearer <key>' with the key the server was started with",
                           "authentication_error")

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(_auth)])

    def encode(messages: list[dict], tools: list[dict] | None = None) -> list[int]:
        try:
            return renderer.encode_prompt(messages, tools)
        except Exception as e:  # the template's own raise_exception (e.g. roles must alternate)
            raise ApiError(400, "messages", f"the chat template rejects these messages: {e}") from None

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": served.name, "template_sha256": served.template_sha256,
                "running": worker.running, "waiting": worker.queued, **worker.stats}

    @v1.get("/models")
    async def models():
        return {"object": "list", "data": [{"id": served.name, "object": "model", "created": 0,
                                            "owned_by": "sftpipe"}]}

    @v1.post("/render")
    async def render(request: Request):
        body = await _read_json(request, cfg)
        if not isinstance(body, dict):
            raise ApiError(400, None, "the request body must be a JSON object")
        messages = decode_messages(body, cfg)
        add = body.get("add_generation_prompt", True)
        if not isinstance(add, bool):
            raise ApiError(400, "add_generation_prompt", "add_generation_prompt must be true or false")
        tools = decode_tools(body, cfg.max_tools) or None
        msgs = renderer.template_messages(messages)
        text = renderer.render_text(msgs, add_generation_prompt=add, tools=tools)
        ids = renderer.encode(msgs, text, add_generation_prompt=add, tools=tools)[0]
        return {"model": served.name, "prompt": text, "token_ids": ids, "tokens": [tok.convert_ids_to_tokens(i)
                                                                                   for i in ids],
                "template_sha256": served.template_sha256}

    @v1.post("/chat/completions")
    async def chat(request: Request):
        body = await _read_json(request, cfg)
        params = decode_request(body, cfg)
        check_model(body)
        if params.parses_tools and convention is None:
            raise ApiError(400, "tools", f"this run's template ({renderer.template.name}) writes no tool calls, so "
                           "none could be parsed; fix: leave tools out (or send tool_choice \"none\"), or train "
                           "with a template that renders tool_calls (the model's own, or chatml / llama3)")
        ids = encode(params.messages, params.tools or None)
        forced = params.tool_choice not in ("auto", "none")
        spec = {"grammar": call_grammar(convention, params.tools, params.tool_choice, marker_id)} if forced else \
            {"json": params.response_format["schema"]} if params.response_format else None
        grammar = await constraint(spec, "tools" if forced else "response_format")
        req = request_for(ids, params, grammar, keep_special and params.parses_tools)
        rid, name = f"chatcmpl-{uuid.uuid4().hex}", served.name
        if not params.stream:
            gen = await replies.whole(req, request)
            if gen is None:
                return JSONResponse({}, status_code=499)
            text, calls = parse_reply(convention, gen.text) if params.parses_tools else (gen.text, [])
            return encode_response(rid, name, text, gen.finish, len(ids), gen.new_tokens, calls)
        parser = ToolStream(convention) if params.parses_tools else None

        def chunks(piece: str | None) -> list[dict]:
            """Chat chunks for a piece of reply text (None: the end, flushing what the tool parser holds)."""
            if parser is None:
                deltas = [{"content": piece}] if piece else []
            else:
                deltas = parser.feed(piece) if piece is not None else parser.finish()
            return [encode_chunk(rid, name, d) for d in deltas]

        def tail(gen) -> list[dict]:
            finish = "tool_calls" if parser is not None and parser.calls else gen.finish
            return [encode_chunk(rid, name, {}, finish)] + (
                [encode_chunk(rid, name, None, use=usage(len(ids), gen.new_tokens))] if params.include_usage else [])

        return replies.stream(req, [encode_chunk(rid, name, {"role": "assistant", "content": ""})], chunks, tail)

    @v1.post("/completions")
    async def completions(request: Request):
        body = await _read_json(request, cfg)
        params = decode_completion(body, cfg, vocab)
        check_model(body)
        grammar = await constraint(params.structured, "structured_outputs")
        req = request_for(params.ids, params, grammar, params.keep_special)
        rid, name, n = f"cmpl-{uuid.uuid4().hex}", served.name, len(params.ids)
        if not params.stream:
            gen = await replies.whole(req, request)
            if gen is None:
                return JSONResponse({}, status_code=499)
            return encode_completion(rid, name, gen.text, gen.finish, n, gen.new_tokens)

        def tail(gen) -> list[dict]:
            return [encode_completion_chunk(rid, name, "", gen.finish)] + (
                [encode_completion_chunk(rid, name, None, use=usage(n, gen.new_tokens))]
                if params.include_usage else [])

        return replies.stream(req, [], lambda piece: [encode_completion_chunk(rid, name, piece)] if piece else [],
                              tail)

    app.include_router(v1)
    return app


def create_app(ref, cfg: ServeConfig, api_key: str | None = None) -> tuple[FastAPI, Served]:
    """Load and check the run `ref`, start its generation worker (or, with `serve.engine`, the client of the
    engine behind this front, and no weights), and build the app."""
    from .load import load_served

    if cfg.engine:
        from ..generate.remote import RemoteWorker

        served = load_served(ref, weights=False)
        worker = RemoteWorker(cfg.engine, kind=cfg.engine_kind, model=cfg.engine_model, max_batch=cfg.max_batch,
                              max_queue=cfg.max_queue,
                              api_key=os.environ.get("SFTPIPE_ENGINE_API_KEY"))
    else:
        from ..generate import Engine, Worker

        served = load_served(ref)
        engine = Engine(served.model, served.tokenizer, served.stop_ids, max_batch=cfg.max_batch,
                        prefix_cache=cfg.prefix_cache)
        worker = Worker(engine, max_queue=cfg.max_queue).start()
    return build_app(served, worker, cfg, api_key), served
