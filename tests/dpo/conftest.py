"""Fixtures for DPO tests: a tiny random Llama with the SmolLM2 tokenizer, SFT conversations, a separable set of
preference pairs (short direct answer vs the same answer behind a boilerplate opener), and SFT runs to start from.

Runs are single-threaded (see tests/conftest.py) and a few steps long.
"""

from __future__ import annotations

import json
import random

import pytest

from sftpipe.config import load_config
from sftpipe.dataset import build_renderer

OPENER = "Thank you so much for reaching out to us today, we truly value you as a customer. "


def renderer_for(cfg):
    """The renderer a config's model, template and render sections describe."""
    return build_renderer(cfg.model, cfg.template, cfg.render)


@pytest.fixture(autouse=True)
def _single_thread(single_thread):
    """Every test here runs torch on one thread (tests/conftest.py says why)."""


@pytest.fixture(autouse=True)
def ref_cache(tmp_path, monkeypatch):
    """Reference log-prob caches go to this test's tmp folder, not ~/.cache."""
    monkeypatch.setattr("sftpipe.stages.dpo.cache_dir", lambda: tmp_path / "cache")
    return tmp_path / "cache" / "dpo-ref"


def _question(rng: random.Random) -> tuple[str, str]:
    a, b = rng.randint(1, 60), rng.randint(1, 60)
    return f"What is {a} plus {b}?", f"{a} plus {b} is {a + b}."


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """sft.jsonl (32 conversations), pairs.jsonl (24 pairs: chosen = the answer, rejected = opener + answer)."""
    folder = tmp_path_factory.mktemp("dpo-data")
    rng = random.Random(0)
    sft = []
    for i in range(32):
        q, a = _question(rng)
        sft.append({"id": i, "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]})
    write_jsonl(folder / "sft.jsonl", sft)
    pairs = []
    for i in range(24):
        q, a = _question(rng)
        pairs.append({"id": i, "prompt": [{"role": "user", "content": q}],
                      "chosen": [{"role": "assistant", "content": a}],
                      "rejected": [{"role": "assistant", "content": OPENER + a}]})
    write_jsonl(folder / "pairs.jsonl", pairs)
    return folder


def sft_cfg(tiny_dir, data_dir, runs, *overrides, name="sft"):
    return load_config(overrides=[f"name={name}", f"model.name={tiny_dir}", f"data.train={data_dir / 'sft.jsonl'}",
                                  f"train.output_dir={runs}", "train.report_to=none", "train.precision=fp32",
                                  "train.max_steps=4", "train.batch_size=8", "train.grad_accum=1", "train.lr=2e-2",
                                  "train.warmup_ratio=0", "render.max_length=128", "lora.dropout=0",
                                  *overrides])


@pytest.fixture(scope="session")
def sft_run(tiny_dir, data_dir, tmp_path_factory):
    """A LoRA SFT run of 4 steps (its adapter is far from zero, so SFT and base differ)."""
    from sftpipe.stages.train import run

    return run(sft_cfg(tiny_dir, data_dir, tmp_path_factory.mktemp("runs")), progress=False).run_dir


@pytest.fixture(scope="session")
def sft_full_run(tiny_dir, data_dir, tmp_path_factory):
    """A full-weights SFT run of 2 steps."""
    from sftpipe.stages.train import run

    cfg = sft_cfg(tiny_dir, data_dir, tmp_path_factory.mktemp("runs-full"), "train.mode=full", "train.max_steps=2",
                  "train.lr=1e-3", name="sft-full")
    return run(cfg, progress=False).run_dir


def dpo_cfg(tiny_dir, data_dir, reference, runs, *overrides, name="dpo"):
    """Config for a few quick DPO steps from `reference`; extra `--set`-style overrides win."""
    return load_config(overrides=["name=proj", f"dpo.name={name}", f"model.name={tiny_dir}", "render.max_length=128",
                                  f"dpo.reference={reference}", f"dpo.train={data_dir / 'pairs.jsonl'}",
                                  f"dpo.output_dir={runs}", "dpo.report_to=none", "dpo.precision=fp32",
                                  "dpo.max_steps=3", "dpo.batch_size=4", "dpo.grad_accum=1", "dpo.lr=5e-3",
                                  "dpo.warmup_ratio=0", "dpo.max_length=128", "dpo.max_prompt_length=96",
                                  *overrides])


@pytest.fixture()
def make_dpo(tiny_dir, data_dir, sft_run, tmp_path):
    def make(*overrides, reference=None, name="dpo"):
        return dpo_cfg(tiny_dir, data_dir, reference or sft_run, tmp_path / "runs", *overrides, name=name)

    return make
