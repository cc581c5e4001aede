"""Serve fixtures: a tiny trained run (a random Llama with the real SmolLM2 tokenizer, LoRA, a few steps of
`sftpipe train`, so run.json, parity.json and generation_config.json are the real ones) and a live
`sftpipe serve` on 127.0.0.1 started and stopped by the tests."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx2 as httpx
import pytest
import torch

from sftpipe.config import load_config
from sftpipe.models import load_tokenizer, tiny_model

API_KEY = "test-key-123"


@pytest.fixture(autouse=True)
def _single_thread(single_thread):
    """Every test here runs torch on one thread (tests/conftest.py says why)."""


def _conversation(rng: random.Random, i: int) -> dict:
    a, b = rng.randint(1, 60), rng.randint(1, 60)
    return {"id": i, "messages": [{"role": "user", "content": f"What is {a} plus {b}?"},
                                  {"role": "assistant", "content": f"{a} plus {b} is {a + b}."}]}


def train_tiny(root: Path, name: str, rows: list[dict], *, seed: int, threads: int, overrides: list[str]) -> Path:
    """runs/<name> under `root`: `sftpipe train` on `rows` from a tiny random Llama (seed `seed`) with the real
    SmolLM2 tokenizer, on `threads` torch threads; `overrides` set the mode, steps and the rest."""
    from sftpipe.stages.train import run as train

    tok = load_tokenizer("smollm2-135m-instruct")
    tiny_model(tok, seed=seed).save_pretrained(root / "base")
    tok.save_pretrained(root / "base")
    (root / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    cfg = load_config(overrides=[
        f"name={name}", f"model.name={root / 'base'}", f"data.train={root / 'train.jsonl'}",
        f"train.output_dir={root / 'runs'}", "train.report_to=none", "train.precision=fp32", "train.batch_size=4",
        "train.grad_accum=1", "train.lr=1e-2", "train.warmup_ratio=0", *overrides])
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return train(cfg, progress=False).run_dir
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """runs/serve-t: a complete LoRA run on a tiny random Llama (2 steps)."""
    rng = random.Random(0)
    return train_tiny(tmp_path_factory.mktemp("serve-run"), "serve-t", [_conversation(rng, i) for i in range(16)],
                      seed=5, threads=1, overrides=["train.mode=lora", "train.max_steps=2", "render.max_length=128",
                                                    "train.parity_examples=8"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """`sftpipe serve` in a subprocess on 127.0.0.1; `url` is its /v1 base."""

    def __init__(self, run: Path, *extra: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "sftpipe.cli", "serve", str(run), "--port",
                                      str(self.port), "--api-key", API_KEY, *extra],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.proc.stdout.read()}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError("server did not start in 120 s")

    def stop(self) -> str:
        self.proc.terminate()
        try:
            out, _ = self.proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        return out


@pytest.fixture(scope="session")
def live(tiny_run):
    """A live server on the tiny run (max_batch 8, queue 64), shared by the tests of this folder."""
    server = LiveServer(tiny_run, "--set", "serve.max_batch=8", "--set", "serve.max_tokens_cap=256",
                        "--set", "serve.max_messages=8", "--set", "serve.max_body_bytes=20000",
                        "--set", "serve.context=512")
    yield server
    server.stop()
