"""An engine behind the front: `RemoteWorker` takes the same `Request`s as `Worker` (token ids, sampling, stops, a
grammar) and hands them to a server that completes token-id prompts, streaming the text back through each
request's `on_text` / `on_done`. Kinds:
- `openai`: `POST {url}/completions` with `prompt` a list of ids (vLLM's and sftpipe's own), grammars as vLLM's
  `structured_outputs`, control tokens kept with `skip_special_tokens: false`;
- `llama.cpp`: llama-server's `POST {url}/completion` with `prompt` a list of ids, JSON grammars as `json_schema`
  (a Lark grammar, which forced tool calls use, has no llama-server equivalent and fails the request).
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

from .engine import Generation, Request
from .worker import QueueFull

KINDS = ("openai", "llama.cpp")


class EngineError(RuntimeError):
    """The engine behind the front failed a request (its answer, or why it could not be reached)."""


def _body(kind: str, req: Request, model: str | None) -> dict:
    """The engine's request body for `req`."""
    spec = getattr(req.constraint, "spec", None)
    if kind == "llama.cpp":
        if spec and "json" not in spec:
            raise EngineError("llama-server takes JSON schemas, not Lark grammars (forced tool calls); fix: use "
                              "tool_choice auto, or an engine of kind openai (vLLM, sftpipe)")
        body = {"prompt": req.ids, "n_predict": req.max_new_tokens, "temperature": req.temperature,
                "top_p": req.top_p, "stop": list(req.stop), "stream": True, "cache_prompt": True}
        if req.seed is not None:
            body["seed"] = req.seed
        if spec:
            body["json_schema"] = spec["json"]
        return body
    body = {"prompt": req.ids, "max_tokens": req.max_new_tokens, "temperature": req.temperature,
            "top_p": req.top_p, "stop": list(req.stop), "seed": req.seed, "stream": True,
            "stream_options": {"include_usage": True}, "skip_special_tokens": not req.keep_special}
    if model:
        body["model"] = model
    if spec:
        body["structured_outputs"] = spec
    return body


def _pieces(kind: str, event: dict) -> tuple[str, str | None, int | None]:
    """(text, finish reason or None, completion tokens if known) of one streamed event."""
    if kind == "llama.cpp":
        finish = None
        if event.get("stop"):
            finish = "length" if event.get("stop_type") == "limit" else "stop"
        return event.get("content", ""), finish, event.get("tokens_predicted")
    choice = (event.get("choices") or [{}])[0]
    use = event.get("usage") or {}
    return choice.get("text") or "", choice.get("finish_reason"), use.get("completion_tokens")


class RemoteWorker:
    """Requests decoded by a remote engine, at most `max_batch` at once and `max_queue` waiting (then
    `QueueFull`); a request's `cancelled` closes its stream at the next piece."""

    def __init__(self, url: str, *, kind: str = "openai", model: str | None = None, max_batch: int = 16,
                 max_queue: int = 64, timeout: float = 600.0, api_key: str | None = None):
        import httpx2 as httpx

        if kind not in KINDS:
            raise ValueError(f"engine kind {kind!r}; allowed: {', '.join(KINDS)}")
        self.url, self.kind, self.model, self.limit = url.rstrip("/"), kind, model, max_batch + max_queue
        self.max_batch = max_batch
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(timeout=httpx.Timeout(timeout, connect=10.0), headers=headers)
        self.pool = ThreadPoolExecutor(max_batch, thread_name_prefix="sftpipe-engine")
        self.lock, self.active, self.busy = threading.Lock(), 0, 0

    @property
    def running(self) -> int:
        return self.busy

    @property
    def queued(self) -> int:
        return self.active - self.busy

    @property
    def stats(self) -> dict:
        return {}

    def start(self) -> RemoteWorker:
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.client.close()

    def submit(self, request: Request) -> None:
        """Queue `request`; QueueFull when `max_batch` run and `max_queue` wait already."""
        with self.lock:
            if self.active >= self.limit:
                raise QueueFull(f"{self.active - self.max_batch} requests are already waiting")
            self.active += 1
        self.pool.submit(self._run, request)

    def _run(self, req: Request) -> None:
        with self.lock:
            self.busy += 1
        try:
            gen = self._complete(req)
        except Exception as exc:  # the engine's failure fails this request, not the front
            gen = exc if isinstance(exc, EngineError) else EngineError(f"{self.url}: {type(exc).__name__}: {exc}")
        finally:
            with self.lock:
                self.busy -= 1
                self.active -= 1
        if req.on_done:
            req.on_done(gen)  # type: ignore[arg-type]

    def _complete(self, req: Request) -> Generation:
        path = "/completion" if self.kind == "llama.cpp" else "/completions"
        text, finish, tokens = "", None, None
        with self.client.stream("POST", self.url + path, json=_body(self.kind, req, self.model)) as response:
            if response.status_code != 200:
                raise EngineError(f"{self.url}{path} answered {response.status_code}: {response.read()[:300]!r}")
            for line in response.iter_lines():
                if req.cancelled:
                    return Generation(text, tokens or 0, len(req.ids), "cancelled")
                if not line.startswith("data:") or line.strip() == "data: [DONE]":
                    continue
                piece, done, count = _pieces(self.kind, json.loads(line[5:]))
                finish, tokens = done or finish, count if count is not None else tokens
                if piece:
                    text += piece
                    if req.on_text:
                        req.on_text(piece)
        return Generation(text, tokens or 0, len(req.ids), finish or "stop")
