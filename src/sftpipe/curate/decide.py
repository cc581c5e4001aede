"""The global stages of a curate run, decided over every shard at once from the arrays the tasks wrote.

Rows are numbered across the main stream's shards, then the mix stream's. Dedup runs once over both streams in
that order, which keeps exactly what deduplicating the main stream and then the mix stream against it keeps.
Quality, mix and split follow on the survivors. Only compact arrays are loaded (digests, sketches, scores,
strata); records themselves stay on disk until the outputs are written.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config.curate import CurateConfig
from .dedup import Dedup
from .minhash import NearIndex, Sketch
from .mix import pick
from .quality import Quality
from .shard import NOT_DROPPED, task_rows
from .split import MISSING, Split, group_views

FATE_KEPT = ""


@dataclass
class Stream:
    """One stream's task outputs (in shard order) and the positions of its global stages in its stage list."""

    prefix: str
    stems: list[Path]
    positions: dict[str, int]  # global stage name -> index in the stream's stage list

    def arrays(self, key: str) -> list[np.ndarray]:
        """Array `key` of every task, in order (empty when absent)."""
        out = []
        for stem in self.stems:
            with np.load(stem.with_suffix(".npz")) as z:
                out.append(z[key] if key in z.files else np.zeros(0))
        return out

    def concat(self, key: str) -> np.ndarray:
        parts = self.arrays(key)
        return np.concatenate(parts) if parts else np.zeros(0)

    def sketch(self, name: str, rows: np.ndarray | None = None) -> Sketch:
        """Sketch `name` of the rows that have one (all, or the feature rows `rows`, ascending), read one shard at a
        time into arrays allocated once."""
        picks, n, flat, start = [], 0, 0, 0
        for sizes in self.arrays(f"{name}_offsets"):
            sizes = np.diff(sizes)
            local = None if rows is None else rows[(rows >= start) & (rows < start + len(sizes))] - start
            chosen = sizes if local is None else sizes[local]
            picks.append(local)
            n, flat, start = n + len(chosen), flat + int(chosen.sum()), start + len(sizes)
        return Sketch.join((self._sketch_part(stem, name, local) for stem, local in zip(self.stems, picks)), n, flat)

    @staticmethod
    def _sketch_part(stem: Path, name: str, rows: np.ndarray | None) -> Sketch:
        with np.load(stem.with_suffix(".npz")) as z:
            part = Sketch(*(z[f"{name}_{k}"] for k in ("sig", "keys", "flat", "offsets")))
        return part if rows is None else part.take(rows)

    def sizes(self, name: str) -> np.ndarray:
        """Shingles per feature row of sketch `name`."""
        parts = [np.diff(offsets) for offsets in self.arrays(f"{name}_offsets")]
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    def reaches(self, at: np.ndarray, stage: str) -> np.ndarray:
        """Rows that no per-record stage before `stage` dropped."""
        return at > self.positions[stage]


@dataclass
class Decisions:
    """Per stream, row -> (stage, reason, details) for rows a global stage dropped; the split of each kept row;
    per global stage its stats and seconds."""

    drops: dict[str, dict[int, tuple[str, str, dict]]] = field(default_factory=dict)
    splits: dict[str, dict[int, str]] = field(default_factory=dict)
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    mixed: dict[str, Any] = field(default_factory=dict)


def decide(cfg: CurateConfig, main: Stream, mix: Stream | None, quality: Quality | None) -> Decisions:
    """Run dedup, quality, mix and split over both streams' arrays."""
    out = Decisions()
    streams = [main] + ([mix] if mix else [])
    at = {s.prefix: s.concat("at").astype(np.int64) for s in streams}
    alive = {s.prefix: at[s.prefix] == NOT_DROPPED for s in streams}  # no per-record stage drops it
    for s in streams:
        out.drops[s.prefix] = {}
    if cfg.dedup.enabled:
        t0 = time.perf_counter()
        _dedup(cfg, streams, at, out)
        out.seconds["dedup"] = time.perf_counter() - t0
    for s in streams:  # a row dropped by dedup is gone, whatever later per-record stage would have said
        alive[s.prefix][list(out.drops[s.prefix])] = False
    if quality is not None:
        t0 = time.perf_counter()
        _quality(quality, main, at[main.prefix], out)
        alive[main.prefix][list(out.drops[main.prefix])] = False
        out.seconds["quality"] = time.perf_counter() - t0
    picked = np.zeros(0, dtype=np.int64)
    if mix is not None:
        picked = _mix(cfg, mix, alive, out)
    if cfg.split.enabled:
        t0 = time.perf_counter()
        _split(cfg, main, mix, at, alive[main.prefix], picked, out)
        out.seconds["split"] = time.perf_counter() - t0
    return out


def _dedup(cfg: CurateConfig, streams: list[Stream], at: dict, out: Decisions) -> None:
    dedup = Dedup(cfg.dedup, cfg.strict)
    ids = [json.loads(i) for s in streams for i in s.concat("dedup_ids").tolist()]
    digests = [d for s in streams for d in s.concat("dedup_exact").tolist()]
    near = Sketch.concat([s.sketch("dedup") for s in streams]) if dedup.near is not None else None
    vectors = np.concatenate([s.concat("dedup_embedding").reshape(-1, 384) for s in streams]) \
        if cfg.dedup.semantic.enabled else None
    found = dedup.decide(ids, digests, near, vectors)
    start = 0
    for s in streams:  # feature rows are the rows that reach dedup, in order
        rows = np.flatnonzero(s.reaches(at[s.prefix], "dedup"))
        for k, row in enumerate(rows.tolist()):
            if start + k in found:
                reason, details = found[start + k]
                out.drops[s.prefix][row] = (s.prefix + "dedup", reason, details)
        start += len(rows)
    out.stats["dedup"] = dict(dedup.stats)


def _quality(quality: Quality, main: Stream, at: np.ndarray, out: Decisions) -> None:
    reached = np.flatnonzero(main.reaches(at, "quality"))
    scores = main.concat("quality")
    assert len(scores) == len(reached)
    live = np.array([row not in out.drops[main.prefix] for row in reached.tolist()], dtype=bool)
    rows, scores = reached[live], scores[live]
    quality.stats.clear()
    convs = _Lazy(main, rows) if quality.cfg.judge.enabled else None
    for k, (reason, details) in quality.decide(scores.tolist(), convs, lambda k: None).items():  # parts: on write
        out.drops[main.prefix][int(rows[k])] = ("quality", reason, details)
    out.stats["quality"] = dict(quality.stats)


class _Lazy:
    """The conversations of `rows` of a stream, read from its task files on first use (for the judge)."""

    def __init__(self, stream: Stream, rows: np.ndarray):
        self.stream, self.rows, self._convs = stream, rows, None

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, k: int):
        if self._convs is None:
            from ..readers import parse_record

            want = set(self.rows.tolist())
            found = {}
            row = 0
            for stem in self.stream.stems:
                for r in task_rows(stem.with_suffix(".rows.jsonl")):
                    if row in want:
                        found[row] = parse_record(r["states"][r["reached"]["quality"]])
                    row += 1
            self._convs = [found[r] for r in self.rows.tolist()]
        return self._convs[k]


def _mix(cfg: CurateConfig, mix: Stream, alive: dict, out: Decisions) -> np.ndarray:
    """Pick the mixed-in rows of the mix stream; the rest are dropped `not_sampled`."""
    t0 = time.perf_counter()
    pool = np.flatnonzero(alive[mix.prefix])
    n_main = int(alive[next(k for k in alive if k != mix.prefix)].sum())
    picked, out.stats["mix"], details = pick(n_main, len(pool), cfg.mix)
    left = np.ones(len(pool), dtype=bool)
    left[picked] = False
    for row in pool[left].tolist():
        out.drops[mix.prefix][row] = ("mix", "not_sampled", details)
    out.mixed = {"in": n_main + len(pool), "out": n_main + len(picked)}
    out.seconds["mix"] = time.perf_counter() - t0
    return pool[picked]


def _split(cfg: CurateConfig, main: Stream, mix: Stream | None, at: dict, alive_main: np.ndarray, picked: np.ndarray,
           out: Decisions) -> None:
    """Assign every kept row (main, then the picked mix rows) to a split."""
    split = Split(cfg.split, cfg.strict)
    parts = [(main, np.flatnonzero(alive_main), False)] + ([(mix, picked, True)] if mix is not None else [])
    finals, strata, picks = [], [], []
    for stream, rows, mixed in parts:
        final_rows = np.flatnonzero(at[stream.prefix] == NOT_DROPPED)
        k = np.searchsorted(final_rows, rows)  # feature index of each row among the stream's final rows
        labels = stream.concat("strata").tolist()
        for i in k.tolist():  # [has the field, its value as a string or None]; mixing fills a missing field
            has, value = json.loads(labels[i])
            value = cfg.mix.label if mixed and cfg.split.by and not has else value
            strata.append(MISSING if value is None else value)
        picks.append((stream, k))
        finals.append((stream.prefix, rows))

    def view(which: int, name: str) -> tuple[NearIndex, list, Sketch]:
        # one view in memory at a time: group_views lets each go (its index holds it) before it asks for the next
        norms = [n for stream, k in picks for n in stream.concat(f"{name}_norm")[k].tolist()]
        return split.views()[which], norms, Sketch.concat([stream.sketch(name, k) for stream, k in picks])

    n = len(strata)
    if not any((stream.sizes("prompt")[k] > 0).any() for stream, k in picks):
        groups = list(range(n))
    else:
        groups = group_views(n, (view(which, name) for which, name in enumerate(("prompt", "dialogue"))))
    names = split.assign_groups(groups, strata)
    start = 0
    for prefix, rows in finals:
        out.splits[prefix] = dict(zip(rows.tolist(), names[start:start + len(rows)]))
        start += len(rows)
    out.stats["split"] = dict(split.stats)
