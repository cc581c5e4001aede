"""The encoded pairs dataset: the same rows as encoding in memory, built once per key and memory-mapped after."""

from __future__ import annotations

import itertools
import json

from sftpipe.config import load_config
from sftpipe.curated import files_hash
from sftpipe.dpo import dataset
from sftpipe.dpo.encode import encode_pairs
from sftpipe.dpo.pairs import iter_pairs

from .conftest import renderer_for, write_jsonl


def _setup(tmp_path, monkeypatch, data_dir, *overrides):
    monkeypatch.setenv("SFTPIPE_TOKENIZED_CACHE", str(tmp_path / "cache"))
    rows = [json.loads(line) for line in (data_dir / "pairs.jsonl").read_text().splitlines()]
    rows.append({"id": "same", "prompt": rows[0]["prompt"], "chosen": rows[0]["chosen"], "rejected": rows[0]["chosen"]})
    pairs = write_jsonl(tmp_path / "pairs.jsonl", rows)
    cfg = load_config(overrides=[f"dpo.train={pairs}", "dpo.on_error=skip", *overrides])
    return cfg, renderer_for(cfg), [str(pairs)]


def test_pairs_are_encoded_once_and_equal_the_in_memory_encoding(tmp_path, monkeypatch, data_dir):
    cfg, renderer, paths = _setup(tmp_path, monkeypatch, data_dir)
    first = dataset.load_or_encode(paths, cfg.dpo, renderer)
    again = dataset.load_or_encode(paths, cfg.dpo, renderer)
    assert first.built and not again.built and again.folder == first.folder
    assert again.data_hash == files_hash(paths)
    items = itertools.chain.from_iterable(iter_pairs(p) for p in paths)
    enc = encode_pairs(items, renderer, max_length=cfg.dpo.max_length, max_prompt_length=cfg.dpo.max_prompt_length,
                       on_error="skip")
    view = again.training_view()
    assert view.column_names == ["prompt_ids", "chosen_ids", "rejected_ids", "length"]
    assert [{k: r[k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")} for r in view] == enc.rows
    assert view["length"] == [dataset.row_length(r) for r in enc.rows]
    assert again.summary() == enc.summary() and again.summary()["rejected_by_reason"] == {"identical_replies": 1}
    assert [p.to_record() for p in again.pairs(3)] == [p.to_record() for p in enc.pairs[:3]]


def test_the_key_follows_the_options_that_change_the_rows(tmp_path, monkeypatch, data_dir):
    cfg, renderer, paths = _setup(tmp_path, monkeypatch, data_dir)
    short, _, _ = _setup(tmp_path, monkeypatch, data_dir, "dpo.max_length=24")
    quiet, _, _ = _setup(tmp_path, monkeypatch, data_dir, "dpo.logging_steps=3")
    data_hash = files_hash(paths)
    key = dataset.pair_key(data_hash, renderer, cfg.dpo)
    assert dataset.pair_key(data_hash, renderer, short.dpo) != key
    assert dataset.pair_key(data_hash, renderer, quiet.dpo) == key
    fewer = dataset.load_or_encode(paths, short.dpo, renderer)
    assert fewer.built and len(fewer) < len(dataset.load_or_encode(paths, cfg.dpo, renderer))
