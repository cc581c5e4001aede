"""What one curate task does with one input shard: read its rows, run every per-record stage, keep what the
global stages need.

Per-record stages are pure, so a task runs all of them on its rows in pipeline order, stopping at the first
that drops a row. The global stages (dedup, quality, split) decide later, over every shard at once, from what
the task computed here: the record as it reached each global stage, its dedup key's exact digest and MinHash
sketch, its quality score, and the split's two sketches. A task writes `<task>.rows.jsonl` (one line per input
row, in input order) and `<task>.npz`, each beside and renamed into place, so a killed task leaves
nothing and a rerun repeats it whole.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..conversation import Conversation, Source
from ..errors import RecordError
from ..readers import read_rows
from .base import Drop, RecordStage, key_text, norm_text, record_id
from .dedup import Dedup, embed, exact_digest
from .engine import Shard, shard_rows
from .minhash import NearIndex, Sketch
from .pii import redact_text
from .quality import heuristic_parts, score_of

READ, NOT_DROPPED = -1, 32767  # `at` of a row the reader rejected, and of a row no per-record stage dropped
PARSE_ERRORS = ("parse", "invalid_utf8")  # reader reasons for a line that is not a JSON object at all
SCRUBBED = ("read", "normalize")  # stages before pii: their rejected records are redacted when written


@dataclass
class Views:
    """What the global stages compare: the dedup stage (its key, exact digest, near sketch and embedding) and
    the split's two near-duplicate views (None: not needed)."""

    dedup: Dedup | None = None
    prompt: NearIndex | None = None  # split: the prompt (or whole conversation) text
    dialogue: NearIndex | None = None  # split: every non-system message


@dataclass
class ShardTask:
    """Run the per-record stages over shard `i` of `shards`; `globals_at` names the global stage at each
    position of `stages` (None for a per-record stage). Callable with the task index (see engine.run_tasks)."""

    shards: list[Shard]
    stages: list[RecordStage | None]
    globals_at: list[str | None]
    views: Views
    work: Path
    format: str = "auto"
    column_map: dict | None = None
    strict: bool = False
    scrub: Any = None  # PiiConfig: redact records rejected before the pii stage
    quality: bool = False
    stratum: str | None = None  # the split's `by` field, read from each record that passes every stage
    prefix: str = ""

    def __call__(self, i: int) -> None:
        feats, seconds, at = _Features(self.views, self.quality, self.stratum), Counter(), []
        shard, stem = self.shards[i], self.stem(i)
        rows_path = stem.with_suffix(".rows.jsonl")
        with _atomic(rows_path) as f:  # rows go to disk as they come; only the compact features stay in memory
            t0 = time.perf_counter()
            for obj, out in read_rows(shard.path, shard_rows(shard), format=self.format,
                                      column_map=self.column_map):
                seconds["read"] += time.perf_counter() - t0
                row = self._row(obj, out, feats, seconds)
                at.append(row.get("at", NOT_DROPPED))
                f.write(json.dumps(row, ensure_ascii=False).encode("utf-8") + b"\n")
                t0 = time.perf_counter()
        arrays = {**feats.arrays(), "at": np.array(at, dtype=np.int16), "seconds": np.array(json.dumps(seconds))}
        with _atomic(stem.with_suffix(".npz")) as f:  # written last: the task's outputs are complete
            np.savez(f, **arrays)

    def stem(self, i: int) -> Path:
        """Where task `i` writes (`<stem>.rows.jsonl` and `<stem>.npz`)."""
        return self.work / f"{i:05d}"

    def _row(self, obj: Any, out: Conversation | RecordError, feats: _Features, seconds: Counter) -> dict:
        if not isinstance(out, Conversation):
            if self.strict:
                raise out
            drop = Drop(None, "read", "parse" if out.reason in PARSE_ERRORS else "invalid",
                        {"error": out.reason, "message": str(out)}, source=Source(out.path, out.line), raw=obj)
            return {"drop": self._rejected(drop, "read"), "at": READ}
        conv, row = out, {"id": record_id(out), "src": [out.source.path, out.source.line]}
        states: list[dict] = []
        reached: dict[str, int] = {}
        extras: dict[str, dict] = {}
        for k, stage in enumerate(self.stages):
            if stage is None:  # a global stage: remember the record as it arrives there
                name = self.globals_at[k]
                reached[name] = _state(states, conv)
                if name == "quality":
                    row["parts"] = heuristic_parts(conv)
                feats.add_at(name, conv, row["id"], row.get("parts"))
                continue
            t0 = time.perf_counter()
            result, extra = stage.safe_process(conv)
            seconds[stage.name] += time.perf_counter() - t0
            if extra:
                extras[stage.name] = extra
            if isinstance(result, Drop):
                row.update(drop=self._rejected(result, stage.name), at=k)
                break
            conv = result
        else:
            row["final"] = _state(states, conv)
            feats.add_final(conv)
        row.update(states=states, reached=reached, extras=extras)
        return row

    def _rejected(self, drop: Drop, stage: str) -> dict:
        """The rejected.jsonl line of a row that a per-record stage (or the reader) dropped."""
        drop.stage = self.prefix + stage
        rec = drop.to_record()
        if self.scrub is not None and stage in SCRUBBED:
            rec["record"] = scrub(rec["record"], self.scrub)
        return rec


def _state(states: list[dict], conv: Conversation) -> int:
    """The index in `states` of the record as it is now (appended unless the last state equals it)."""
    rec = conv.to_record()
    if not states or states[-1] != rec:
        states.append(rec)
    return len(states) - 1


def scrub(obj: Any, cfg) -> Any:
    """Redact PII in every string of a raw record (for records rejected before the pii stage)."""
    if isinstance(obj, str):
        return redact_text(obj, cfg.types, cfg.phone_region)[0]
    if isinstance(obj, list):
        return [scrub(x, cfg) for x in obj]
    if isinstance(obj, dict):
        return {k: scrub(v, cfg) for k, v in obj.items()}
    return obj


class _Features:
    """Collects, per row that reaches them, what the global stages decide on."""

    def __init__(self, views: Views, quality: bool, stratum: str | None):
        self.views, self.quality, self.stratum = views, quality, stratum
        self.dedup_texts: list[str] = []
        self.dedup_ids: list[str] = []
        self.scores: list[float] = []
        self.prompts: list[str] = []
        self.dialogues: list[str] = []
        self.strata: list[str] = []

    def add_at(self, name: str, conv: Conversation, rid: Any, parts: dict | None = None) -> None:
        if name == "dedup":
            self.dedup_texts.append(self.views.dedup.key(conv))
            self.dedup_ids.append(json.dumps(rid))
        elif name == "quality":
            self.scores.append(score_of(parts))

    def add_final(self, conv: Conversation) -> None:
        value = conv.meta.get(self.stratum) if self.stratum else None
        self.strata.append(json.dumps([bool(self.stratum) and self.stratum in conv.meta,
                                       None if value is None else str(value)]))
        if self.views.prompt is not None:
            self.prompts.append(key_text(conv, "prompt") or key_text(conv, "conversation"))
            self.dialogues.append(conv.dialogue_text())

    def arrays(self) -> dict[str, np.ndarray]:
        v, dedup = self.views, self.views.dedup
        out = {"dedup_ids": np.array(self.dedup_ids, dtype=str), "strata": np.array(self.strata, dtype=str)}
        if dedup is not None:
            out["dedup_exact"] = np.array([exact_digest(t) for t in self.dedup_texts], dtype="S32").reshape(-1)
        for name, index, texts in (("dedup", dedup and dedup.near, self.dedup_texts),
                                   ("prompt", v.prompt, self.prompts), ("dialogue", v.dialogue, self.dialogues)):
            if index is not None:
                out.update({f"{name}_{k}": a for k, a in sketch_arrays(index.sketch(texts)).items()})
            if name != "dedup" and index is not None:  # texts that normalize alike are grouped without LSH
                out[f"{name}_norm"] = np.array([hashlib.blake2b(n.encode("utf-8"), digest_size=8).digest() if n
                                                else b"" for n in map(norm_text, texts)], dtype="S8").reshape(-1)
        if dedup is not None and dedup.cfg.semantic.enabled:
            sem = dedup.cfg.semantic
            out["dedup_embedding"] = embed(self.dedup_texts, sem.model, sem.batch_size)
        if self.quality:
            out["quality"] = np.array(self.scores, dtype=np.float64)
        return out


def sketch_arrays(sk: Sketch) -> dict[str, np.ndarray]:
    """A sketch as named arrays (for np.savez)."""
    return {"sig": sk.sig, "keys": sk.keys, "flat": sk.flat, "offsets": sk.offsets}


@contextmanager
def _atomic(path: Path) -> Iterator:
    """A binary file written beside `path` and renamed into place once complete."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        yield f
    os.replace(tmp, path)


def task_rows(path: Path) -> Iterator[dict]:
    """The rows a task wrote, in input order."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)
