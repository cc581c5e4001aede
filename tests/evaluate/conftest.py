"""Eval fixtures: a fake run (tiny random models saved in the run folder layout, full weights, a base model
folder, a minimal run.json and the parity.json that proves its template; no training involved), the Harbor demo
data, and a local judge server."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from sftpipe.models import tiny_model
from sftpipe.parity import save_tokenizer
from sftpipe.render import ChatRenderer
from sftpipe.runs import template_sha256
from sftpipe.runs.checkpoints import write_marker
from sftpipe.templates import load_template


def save_model(tok, folder: Path, seed: int) -> Path:
    """A tiny random model + the tokenizer (with its template) saved as an HF folder."""
    ChatRenderer(tok, load_template("model", tok))  # sets tok.chat_template, as a run saves it
    tiny_model(tok, seed=seed).save_pretrained(folder, safe_serialization=True)
    save_tokenizer(tok, folder)
    return folder


def make_run(tok, root: Path, *, checkpoints: tuple[int, ...] = (), train_files: list[str] | None = None) -> Path:
    """root/runs/demo (final weights: seed 1; checkpoint-N: seed N) with its base model in root/base (seed 0)."""
    base = save_model(tok, root / "base", seed=0)
    run = save_model(tok, root / "runs" / "demo", seed=1)
    for step in checkpoints:
        folder = run / "checkpoints" / f"checkpoint-{step}"
        tiny_model(tok, seed=step).save_pretrained(folder, safe_serialization=True)
        write_marker(folder, step)  # complete, as train marks its checkpoints
    sha = template_sha256(tok.chat_template)  # eval checks the run's template as serving does
    info = {"config": {"name": "demo", "data": {"train": train_files or []}, "render": {"max_length": 512}},
            "base_model": str(base), "mode": "full", "template": {"name": "model", "sha256": sha}}
    (run / "run.json").write_text(json.dumps(info), encoding="utf-8")
    parity = {"template_sha256": sha, "examples_checked": 0, "text_mismatches": 0, "token_mismatches": 0}
    (run / "parity.json").write_text(json.dumps(parity), encoding="utf-8")
    (run / "README.md").write_text("---\nlicense: apache-2.0\n---\n# demo\n\nTrained by sftpipe.\n", encoding="utf-8")
    return run


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory) -> Path:
    """The Harbor demo data (tiny size): eval/compliance.jsonl, eval/redteam.jsonl, policy/, general/."""
    from sftpipe.demo import generate

    out = tmp_path_factory.mktemp("harbor")
    generate(out, size="tiny", seed=0)
    return out


class JudgeServer:
    """A local OpenAI-compatible /chat/completions server; `decide(prompt) -> reply text` answers each request.

    Serves on 127.0.0.1 (an ephemeral port) and refuses more than `max_requests` requests (HTTP 429)."""

    def __init__(self, decide, max_requests: int = 200):
        self.decide, self.max_requests = decide, max_requests
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with lock:
                    server.requests.append(body)
                    server.headers.append(dict(self.headers))
                    over = len(server.requests) > server.max_requests
                if self.path != "/v1/chat/completions" or over:
                    self.send_response(404 if not over else 429)
                    self.end_headers()
                    return
                reply = server.decide(body["messages"][-1]["content"])
                if isinstance(reply, int):  # an HTTP status to answer with
                    self.send_response(reply)
                    self.end_headers()
                    return
                data = json.dumps({"id": "x", "object": "chat.completion", "model": body["model"],
                                   "choices": [{"index": 0, "finish_reason": "stop",
                                                "message": {"role": "assistant", "content": reply}}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @staticmethod
    def replies(prompt: str) -> tuple[str, str]:
        """(reply A, reply B) as the shipped rubric lays them out."""
        a = prompt.split("## Reply A\n", 1)[1].split("\n\n## Reply B\n", 1)
        return a[0], a[1].split("\n\nAnswer with", 1)[0]

    def __enter__(self) -> JudgeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture()
def judge_server():
    """Factory: `with judge_server(decide) as srv:` starts a local judge."""
    return JudgeServer


@pytest.fixture()
def fake_run(tok, tmp_path):
    """Factory: `fake_run(checkpoints=(5,), train_files=[...])` -> the run folder (see make_run)."""
    return lambda **kw: make_run(tok, tmp_path, **kw)
