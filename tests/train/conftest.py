"""Fixtures for training tests: a tiny random Llama saved as a local model folder, and small chat data.

Training tests run single-threaded: the tiny model's matmuls are microseconds, and on a shared 2-core machine a
second OpenMP thread only adds wake-up latency (10-30x slower steps under load).
"""

from __future__ import annotations

import json
import random

import pytest
import torch

from sftpipe.config import load_config
from sftpipe.models import load_tokenizer, tiny_model


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _conversation(rng: random.Random, i: int) -> dict:
    a, b = rng.randint(1, 60), rng.randint(1, 60)
    msgs = [{"role": "user", "content": f"What is {a} plus {b}?"},
            {"role": "assistant", "content": f"{a} plus {b} is {a + b}."}]
    if i % 3 == 0:  # a second exchange, so examples differ in length and in trained-token count
        msgs += [{"role": "user", "content": "And doubled?"},
                 {"role": "assistant", "content": f"Doubled, that is {2 * (a + b)}."}]
    return {"id": i, "messages": msgs}


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """A local model folder (save_pretrained) with the SmolLM2 tokenizer and a tiny random Llama."""
    folder = tmp_path_factory.mktemp("tiny-model")
    tok = load_tokenizer("smollm2-135m-instruct")
    tiny_model(tok).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """train.jsonl (48 conversations) and eval.jsonl (12)."""
    folder = tmp_path_factory.mktemp("data")
    rng = random.Random(0)
    for name, n, offset in (("train", 48, 0), ("eval", 12, 1000)):
        rows = [_conversation(rng, offset + i) for i in range(n)]
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return folder


def cfg_for(tiny_dir, data_dir, runs_dir, *overrides: str, eval: bool = False, name: str = "t"):
    """Config for a few quick steps on the tiny model; extra `--set`-style overrides win."""
    base = [f"name={name}", f"model.name={tiny_dir}", f"data.train={data_dir / 'train.jsonl'}",
            f"train.output_dir={runs_dir}", "train.report_to=none", "train.precision=fp32",
            "train.max_steps=6", "train.batch_size=4", "train.grad_accum=1", "train.lr=1e-2",
            "train.eval_steps=3", "train.warmup_ratio=0", "render.max_length=128"]
    if eval:
        base.append(f"data.eval={data_dir / 'eval.jsonl'}")
    return load_config(overrides=base + list(overrides))


@pytest.fixture()
def make_cfg(tiny_dir, data_dir, tmp_path):
    """`cfg_for` with runs under this test's tmp_path."""

    def make(*overrides: str, eval: bool = False, name: str = "t"):
        return cfg_for(tiny_dir, data_dir, tmp_path / "runs", *overrides, eval=eval, name=name)

    return make
