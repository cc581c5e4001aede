"""The OpenAI-compatible app: `POST /v1/chat/completions` (JSON or SSE stream, tools, structured outputs),
`POST /v1/render` (the prompt text and ids the model sees), `GET /v1/models`, `GET /health`. Each request goes
decode_request -> its grammar, if any -> predict (the generation engine's worker) -> tool calls parsed ->
encode_response."""

from __future__ import annotations

import asyncio
import hmac
import json
import uuid
from contextlib import asynccontextmanager

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from ..generate import QueueFull, Request as GenRequest, Worker
from ..config.serve import ServeConfig
from .load import Served
from .protocol import (ApiError, ChatParams, decode_messages, decode_request, decode_tools, encode_chunk,
                       encode_response, usage)
from .tools import ToolStream, call_grammar, convention_of, parse_reply


DISCONNECT_POLL_S = 0.25  # how often a non-streaming request checks that its client is still there


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


def build_app(served: Served, worker: Worker, cfg: ServeConfig, api_key: str | None = None) -> FastAPI:
    """The FastAPI app serving `served` through `worker` (started and stopped with the app)."""
    @asynccontextmanager
    async def lifespan(_):
        yield
        worker.stop()

    app = FastAPI(title=f"sftpipe serve {served.name}", docs_url=None, redoc_url=None, openapi_url=None,
                  lifespan=lifespan)
    context = cfg.context or int(getattr(served.model.config, "max_position_embeddings", 2048))
    renderer, tok = served.renderer, served.tokenizer
    convention = convention_of(renderer.template.source)
    # a marker that is a control token (Mistral's [TOOL_CALLS]) is kept in the text the parser reads
    keep_special = convention is not None and convention.marker in tok.all_special_tokens
    grammars = []  # the llguidance tokenizer, built on the first constrained request (about a second)

    async def constraint(params: ChatParams):
        """The grammar this request decodes under: a forced tool call, a JSON reply, or none."""
        from ..generate.constrain import GrammarError, Grammars

        forced = params.tool_choice not in ("auto", "none")
        if not (forced or params.response_format):
            return None
        if not grammars:
            grammars.append(await asyncio.to_thread(Grammars, tok, int(served.model.config.vocab_size),
                                                    served.stop_ids))
        try:
            if forced:
                return await asyncio.to_thread(grammars[0].lark, call_grammar(convention, params.tools,
                                                                              params.tool_choice))
            return await asyncio.to_thread(grammars[0].json, params.response_format["schema"])
        except GrammarError as e:
            param = "tools" if forced else "response_format"
            raise ApiError(400, param, f"{param}: the schema cannot be enforced: {e}") from None

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
                "running": len(worker.engine.rows), "waiting": worker.waiting.qsize()}

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
        if body.get("model") not in (None, served.name):
            raise ApiError(404, "model", f"model {body.get('model')!r} is not served here; this server serves "
                           f"{served.name!r}", "not_found_error")
        if params.parses_tools and convention is None:
            raise ApiError(400, "tools", f"this run's template ({renderer.template.name}) writes no tool calls, so "
                           "none could be parsed; fix: leave tools out (or send tool_choice \"none\"), or train "
                           "with a template that renders tool_calls (the model's own, or chatml / llama3)")
        ids = encode(params.messages, params.tools or None)
        if len(ids) >= context:
            raise ApiError(400, "messages", f"the prompt has {len(ids)} tokens; the context holds {context} "
                           "(prompt + reply); fix: send fewer or shorter messages")
        if params.max_tokens is not None and len(ids) + params.max_tokens > context:  # refused, as OpenAI and vLLM do
            raise ApiError(400, "max_tokens", f"the prompt has {len(ids)} tokens and max_tokens asks for "
                           f"{params.max_tokens} more, but the context holds {context}; fix: ask for at most "
                           f"{context - len(ids)} tokens, or send a shorter prompt")
        budget = min(params.max_tokens or cfg.default_max_tokens, context - len(ids))
        rid = f"chatcmpl-{uuid.uuid4().hex}"
        grammar = await constraint(params)
        if params.stream:
            return await stream(rid, ids, budget, params, grammar)
        return await complete(rid, ids, budget, params, request, grammar)

    def predict(ids: list[int], budget: int, params: ChatParams, grammar=None, on_text=None):
        """Queue the request on the engine; (request, future of its Generation). 429 when the queue is full."""
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def finish(gen):
            loop.call_soon_threadsafe(lambda: done.done() or (done.set_exception(gen) if isinstance(
                gen, BaseException) else done.set_result(gen)))

        req = GenRequest(ids, budget, params.temperature, params.top_p, params.seed, params.stop,
                         on_text=on_text, on_done=finish, constraint=grammar,
                         keep_special=keep_special and params.parses_tools)
        try:
            worker.submit(req)
        except QueueFull as e:
            raise ApiError(429, None, f"the server is busy ({e}); fix: retry after a moment",
                           "rate_limit_error") from None
        return req, done

    async def complete(rid: str, ids: list[int], budget: int, params: ChatParams, request: Request, grammar):
        req, done = predict(ids, budget, params, grammar)
        try:
            while not (await asyncio.wait({done}, timeout=DISCONNECT_POLL_S))[0]:
                if await request.is_disconnected():  # nobody will read the reply: stop decoding it
                    return JSONResponse({}, status_code=499)
            gen = done.result()
        finally:
            req.cancelled = True  # a no-op once finished
        text, calls = parse_reply(convention, gen.text) if params.parses_tools else (gen.text, [])
        return encode_response(rid, served.name, text, gen.finish, len(ids), gen.new_tokens, calls)

    async def stream(rid: str, ids: list[int], budget: int, params: ChatParams, grammar):
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue = asyncio.Queue()
        req, done = predict(ids, budget, params, grammar,
                            on_text=lambda t: loop.call_soon_threadsafe(pieces.put_nowait, t))
        parser = ToolStream(convention) if params.parses_tools else None

        def deltas(piece: str | None) -> list[dict]:
            """Chat deltas for a piece of reply text (None: the end, flushing what the tool parser holds)."""
            if parser is None:
                return [{"content": piece}] if piece else []
            return parser.feed(piece) if piece is not None else parser.finish()
        done.add_done_callback(lambda _: pieces.put_nowait(None))

        def sse(obj) -> str:
            return f"data: {json.dumps(obj)}\n\n"

        async def events():
            try:
                yield sse(encode_chunk(rid, served.name, {"role": "assistant", "content": ""}))
                while (piece := await pieces.get()) is not None:
                    for delta in deltas(piece):
                        yield sse(encode_chunk(rid, served.name, delta))
                while not pieces.empty():  # text queued before the done callback ran
                    if (piece := pieces.get_nowait()) is not None:
                        for delta in deltas(piece):
                            yield sse(encode_chunk(rid, served.name, delta))
                if done.exception() is not None:
                    yield sse(ApiError(500, None, f"generation failed: {done.exception()}", "server_error").body())
                    return
                for delta in deltas(None):
                    yield sse(encode_chunk(rid, served.name, delta))
                gen = done.result()
                finish = "tool_calls" if parser is not None and parser.calls else gen.finish
                yield sse(encode_chunk(rid, served.name, {}, finish))
                if params.include_usage:
                    yield sse(encode_chunk(rid, served.name, None, use=usage(len(ids), gen.new_tokens)))
                yield "data: [DONE]\n\n"
            finally:
                req.cancelled = True

        return StreamingResponse(events(), media_type="text/event-stream")

    app.include_router(v1)
    return app


def create_app(ref, cfg: ServeConfig, api_key: str | None = None) -> tuple[FastAPI, Served]:
    """Load and check the run `ref`, start its generation worker, and build the app."""
    from ..generate import Engine
    from .load import load_served

    served = load_served(ref)
    engine = Engine(served.model, served.tokenizer, served.stop_ids, max_batch=cfg.max_batch)
    worker = Worker(engine, max_queue=cfg.max_queue).start()
    return build_app(served, worker, cfg, api_key), served
