"""Fixtures for training tests: small chat data and configs (the tiny model folder, `tiny_dir`, is tests/conftest.py's).

Training tests run single-threaded (tests/conftest.py's `single_thread` says why).
"""

from __future__ import annotations

import json
import random

import pytest

from sftpipe.config import load_config


@pytest.fixture(autouse=True)
def _single_thread(single_thread):
    """Every test here runs torch on one thread (tests/conftest.py says why)."""


def _conversation(rng: random.Random, i: int) -> dict:
    a, b = rng.randint(1, 60), rng.randint(1, 60)
    msgs = [{"role": "user", "content": f"What is {a} plus {b}?"},
            {"role": "assistant", "content": f"{a} plus {b} is {a + b}."}]
    if i % 3 == 0:  # a second exchange, so examples differ in length and in trained-token count
        msgs += [{"role": "user", "content": "And doubled?"},
                 {"role": "assistant", "content": f"Doubled, that is {2 * (a + b)}."}]
    return {"id": i, "category": "two_turns" if i % 3 == 0 else "one_turn", "messages": msgs}


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
