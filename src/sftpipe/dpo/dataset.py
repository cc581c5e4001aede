"""Encoded preference pairs as one Arrow dataset in the tokenized cache (`sftpipe.tokenized.tokenized_cache_dir`),
built once per pair data, template, tokenizer and DPO options, like SFT's rendered examples: a second run, or a
second process, memory-maps it and encodes nothing. Committed whole (written beside, renamed, marker last).

    <cache>/pairs-<key>/  pairs.arrow  rejects.jsonl  sftpipe_pairs.json
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from ..commit import manifest_ok, read_manifest, staged_folder, write_manifest
from ..curated import files_hash
from ..io import write_jsonl
from ..render import ChatRenderer
from ..tokenized import cache_key, code_digest, tokenized_cache_dir, tokenizer_sha256
from .encode import encode_pairs
from .pairs import Pair, iter_pairs, parse_pair

FORMAT = 1  # raise when the columns or their meaning change
MARKER = "sftpipe_pairs.json"
OPTIONS = ("format", "max_length", "max_prompt_length", "on_error")  # the dpo options that change the rows
_CODE = ("dpo/encode.py", "dpo/pairs.py", "render.py", "conversation.py", "templates")
SCHEMA = pa.schema([("prompt_ids", pa.list_(pa.int32())), ("chosen_ids", pa.list_(pa.int32())),
                    ("rejected_ids", pa.list_(pa.int32())), ("length", pa.int32()), ("pair", pa.large_string())])
TRAINED = ("prompt_ids", "chosen_ids", "rejected_ids", "length")  # the columns the trainer reads


@dataclass
class PairSet:
    """Encoded pairs, memory-mapped (`datasets.Dataset` of SCHEMA), with the rejects and the cache key."""

    folder: Path
    dataset: Any
    rejects: list[dict]
    records_in: int
    reasons: dict[str, int]
    data_hash: str  # the pair files' content hash (files_hash), part of the key
    key: str
    built: bool  # encoded by this call (False: memory-mapped from the cache)

    def __len__(self) -> int:
        return len(self.dataset)

    def training_view(self):
        """The dataset with only the columns the trainer reads (no copy)."""
        return self.dataset.select_columns(list(TRAINED))

    def pairs(self, n: int) -> list[Pair]:
        """The first `n` kept pairs, parsed back from their records."""
        return [parse_pair(json.loads(s)) for s in self.dataset.data.column("pair").slice(0, n).to_pylist()]

    def summary(self) -> dict[str, Any]:
        """JSON-ready counts for run.json."""
        import pyarrow.compute as pc

        table = self.dataset.data
        tokens = {c: int(pc.sum(pc.list_value_length(table.column(c))).as_py() or 0)
                  for c in ("prompt_ids", "chosen_ids", "rejected_ids")}
        return {"records_in": self.records_in, "pairs": len(self), "rejected": len(self.rejects),
                "rejected_by_reason": self.reasons, "tokens": sum(tokens.values()),
                "chosen_tokens": tokens["chosen_ids"], "rejected_tokens": tokens["rejected_ids"]}


def row_length(row: dict[str, list[int]]) -> int:
    """Padded width a pair needs: prompt plus the longer reply (the trainer groups pairs by it).

    >>> row_length({"prompt_ids": [1, 2], "chosen_ids": [3], "rejected_ids": [4, 5, 6]})
    5
    """
    return len(row["prompt_ids"]) + max(len(row["chosen_ids"]), len(row["rejected_ids"]))


def pair_key(data_hash: str, renderer: ChatRenderer, dcfg) -> str:
    """The cache folder name: pair data content (`files_hash`), template, tokenizer, DPO options and the
    encoding code."""
    parts = {"format": FORMAT, "data": data_hash, "template_sha256": renderer.template.sha256,
             "tokenizer_sha256": tokenizer_sha256(renderer), "code_sha256": code_digest(_CODE),
             "options": {k: getattr(dcfg, k) for k in OPTIONS}}
    return "pairs-" + cache_key(parts)


def load_or_encode(paths: list[str], dcfg, renderer: ChatRenderer) -> PairSet:
    """The encoded pairs of `paths` from the cache, encoding them (once) when missing."""
    data_hash = files_hash(paths)
    key = pair_key(data_hash, renderer, dcfg)
    folder = tokenized_cache_dir() / key
    if (found := load(folder, key, data_hash)) is not None:
        return found
    items = itertools.chain.from_iterable(iter_pairs(p, dcfg.format) for p in paths)
    enc = encode_pairs(items, renderer, max_length=dcfg.max_length, max_prompt_length=dcfg.max_prompt_length,
                       on_error=dcfg.on_error)
    rows = {c: [r[c] for r in enc.rows] for c in ("prompt_ids", "chosen_ids", "rejected_ids")}
    rows["length"] = [row_length(r) for r in enc.rows]
    rows["pair"] = [json.dumps(p.to_record(), ensure_ascii=False) for p in enc.pairs]
    with staged_folder(folder) as tmp:
        with pa.ipc.new_stream(str(tmp / "pairs.arrow"), SCHEMA) as writer:
            writer.write_batch(pa.RecordBatch.from_arrays([pa.array(rows[f.name], f.type) for f in SCHEMA],
                                                          schema=SCHEMA))
        if enc.rejects:
            write_jsonl(tmp / "rejects.jsonl", enc.rejects)
        write_manifest(tmp, MARKER, stage="pairs", records_in=enc.records_in, reasons=dict(enc.reasons))
    out = load(folder, key, data_hash)
    assert out is not None, f"{folder} was just committed"
    out.built = True
    return out


def load(folder: Path, key: str, data_hash: str) -> PairSet | None:
    """The committed pairs in `folder`, memory-mapped; None when missing or never committed."""
    if not manifest_ok(folder, MARKER):
        return None
    from datasets import Dataset

    marker = read_manifest(folder, MARKER)
    rejects = [json.loads(line) for line in (folder / "rejects.jsonl").read_text("utf-8").splitlines()] \
        if (folder / "rejects.jsonl").exists() else []
    return PairSet(folder, Dataset.from_file(str(folder / "pairs.arrow")), rejects, marker["records_in"],
                   Counter(marker["reasons"]), data_hash, key, built=False)


def reference_cache_name(pairs: PairSet, reference_sha: str) -> str:
    """The file name of the reference log-probs for `pairs` under one reference model's weights."""
    return hashlib.sha256(f"{reference_sha}\0{pairs.key}".encode()).hexdigest() + ".safetensors"
