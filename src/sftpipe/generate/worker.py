"""The engine on a background thread for a server: requests wait in a bounded queue (full: `QueueFull`, which a
server answers with 429) and join the running batch as rows free up."""

from __future__ import annotations

import queue
import threading

from .engine import Engine, Request


class QueueFull(Exception):
    """The waiting queue is full; try again later."""


class Worker:
    """Owns an `Engine`; `submit` from any thread, results arrive through each request's `on_text` / `on_done`."""

    def __init__(self, engine: Engine, *, max_queue: int = 64):
        self.engine = engine
        self.waiting: queue.Queue[Request] = queue.Queue(maxsize=max_queue)
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="sftpipe-generate", daemon=True)

    @property
    def running(self) -> int:
        """Requests being decoded now."""
        return len(self.engine.rows)

    @property
    def queued(self) -> int:
        """Requests waiting for a row."""
        return self.waiting.qsize()

    @property
    def stats(self) -> dict:
        """Prefix-cache counters for /health: prompts that reused a cached head, prompt tokens not prefilled."""
        prefix = self.engine.prefix
        return {"prefix_hits": prefix.hits, "prefix_tokens_saved": prefix.saved} if prefix is not None else {}

    def start(self) -> Worker:
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def submit(self, request: Request) -> None:
        """Queue `request`; QueueFull when the queue is at its bound."""
        try:
            self.waiting.put_nowait(request)
        except queue.Full:
            raise QueueFull(f"{self.waiting.maxsize} requests are already waiting") from None

    def _take(self) -> list[tuple[object, Request]]:
        items = []
        block = not self.engine.rows
        while self.engine.free - len(items) > 0:
            try:
                req = self.waiting.get(timeout=0.05) if block and not items else self.waiting.get_nowait()
            except queue.Empty:
                break
            if not req.cancelled:
                items.append((id(req), req))
        return items

    def _loop(self) -> None:
        while not self._stop.is_set():
            items = self._take()
            try:
                self.engine.admit(items)
                self.engine.step()
            except Exception as exc:  # a model error fails the requests in flight, not the server
                self.error = exc
                failed = {id(r.req): r.req for r in self.engine.rows} | {id(req): req for _, req in items}
                self.engine.rows, self.engine.cache, self.engine.mask = [], None, None
                for req in failed.values():
                    if req.on_done:
                        req.on_done(exc)  # type: ignore[arg-type]
