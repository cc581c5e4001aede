"""From a checked request to an HTTP reply, for both endpoints that decode (chat and completions): queue it on the
worker (429 when full), wait for it while watching the client (a client that left stops the decoding), or
stream its text as server-sent events."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

from fastapi import Request
from fastapi.responses import StreamingResponse

from ..generate import Generation, QueueFull, Request as GenRequest
from .protocol import ApiError

DISCONNECT_POLL_S = 0.25  # how often a non-streaming request checks that its client is still there


def _failure(exc: BaseException) -> ApiError:
    """The API error for a failed generation: 502 when the engine behind a front failed, else 500."""
    from ..generate.remote import EngineError

    return ApiError(502 if isinstance(exc, EngineError) else 500, None, f"generation failed: {exc}", "server_error")


def sse(obj) -> str:
    """One server-sent event."""
    return f"data: {json.dumps(obj)}\n\n"


class Replies:
    """Queues requests on `worker` and answers with their generations."""

    def __init__(self, worker):
        self.worker = worker

    def submit(self, req: GenRequest, streamed: bool = False):
        """Queue `req`; (its future Generation, a queue of streamed pieces ending in None, or None)."""
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        pieces: asyncio.Queue | None = asyncio.Queue() if streamed else None

        def later(fn, *args):
            try:
                loop.call_soon_threadsafe(fn, *args)
            except RuntimeError:  # the loop is closed (the app shut down): nobody waits for this reply
                pass

        req.on_done = lambda gen: later(lambda: done.done() or (done.set_exception(gen) if isinstance(
            gen, BaseException) else done.set_result(gen)))
        if pieces is not None:
            req.on_text = lambda t: later(pieces.put_nowait, t)
            done.add_done_callback(lambda _: pieces.put_nowait(None))
        try:
            self.worker.submit(req)
        except QueueFull as e:
            raise ApiError(429, None, f"the server is busy ({e}); fix: retry after a moment",
                           "rate_limit_error") from None
        return done, pieces

    async def whole(self, req: GenRequest, request: Request) -> Generation | None:
        """The finished generation of `req`, or None when the client left first (decoding then stops)."""
        done, _ = self.submit(req)
        try:
            while not (await asyncio.wait({done}, timeout=DISCONNECT_POLL_S))[0]:
                if await request.is_disconnected():  # nobody will read the reply: stop decoding it
                    return None
            if done.exception() is not None:
                raise _failure(done.exception())
            return done.result()
        finally:
            req.cancelled = True  # a no-op once finished

    def stream(self, req: GenRequest, head: list[dict], chunks: Callable[[str | None], list[dict]],
               tail: Callable[[Generation], list[dict]]) -> StreamingResponse:
        """Stream `req`: the `head` events, `chunks(piece)` per piece of text (`chunks(None)` once at the end, for
        what a parser held back), then `tail(generation)` and [DONE]."""
        done, pieces = self.submit(req, streamed=True)

        async def events():
            try:
                for obj in head:
                    yield sse(obj)
                while (piece := await pieces.get()) is not None:
                    for obj in chunks(piece):
                        yield sse(obj)
                while not pieces.empty():  # text queued before the done callback ran
                    if (piece := pieces.get_nowait()) is not None:
                        for obj in chunks(piece):
                            yield sse(obj)
                if done.exception() is not None:
                    yield sse(_failure(done.exception()).body())
                    return
                for obj in chunks(None) + tail(done.result()):
                    yield sse(obj)
                yield "data: [DONE]\n\n"
            finally:
                req.cancelled = True

        return StreamingResponse(events(), media_type="text/event-stream")
