"""`sftpipe serve RUN_OR_CHECKPOINT`: an OpenAI-compatible endpoint for a trained run.

Read top to bottom: load the run through `sftpipe.runs` and refuse to start unless its tokenizer's template is the
one run.json and parity.json record -> start the generation worker (continuous batching, bounded queue; or, with
`serve.engine`, the client of an engine that takes token ids, the weights left to it) -> serve
the FastAPI app with uvicorn on loopback (unless told otherwise) until interrupted.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..io import require_free_port
from ..config.serve import ServeConfig
from ..serve.app import create_app


@dataclass
class ServeResult:
    """What was served, where."""

    name: str
    url: str
    template_sha256: str


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def run(ref: str | Path, cfg: ServeConfig, *, api_key: str | None = None,
        log: Callable[[str], None] = lambda _: None) -> ServeResult:
    """Serve `ref` (runs/<name> or one of its checkpoint folders) until interrupted."""
    import uvicorn

    require_free_port(cfg.host, cfg.port, "--port")  # before the model loads
    app, served = create_app(ref, cfg, api_key)
    url = f"http://{cfg.host}:{cfg.port}/v1"
    if not _loopback(cfg.host) and not api_key:
        log(f"warning: listening on {cfg.host} without --api-key: anyone who can reach this port can use the model")
    engine = f"front for the {cfg.engine_kind} engine at {cfg.engine}" if cfg.engine else "built-in engine"
    log(f"serving {served.name} on {url} (template sha256 {served.template_sha256[:12]} = run.json = "
        f"parity.json; stops on ids {served.stop_ids}; {engine}; batch {cfg.max_batch}, queue {cfg.max_queue})")
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="warning")
    return ServeResult(served.name, url, served.template_sha256)
