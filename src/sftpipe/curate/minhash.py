"""Near-duplicate search with MinHash LSH, vectorized end to end (used by the dedup and split stages).

For a batch of texts:
1. shingles: word n-gram hashes, computed in bulk (see shingles.py);
2. signatures: rensa computes the MinHash signature of every text from the flat shingle hashes;
3. candidates: the signature is cut into LSH bands and numpy groups equal band keys into candidate pairs;
4. pre-check: a candidate pair must agree on at least `min_matches` signature slots, a bound that a pair at the
   threshold misses with probability <= MISS_PROBABILITY (1e-4; more similar pairs miss it even less), while the
   LSH bands themselves miss such a pair about 5% of the time (16 bands of 8 rows at 0.8), as datasketch's do;
5. decision: the exact Jaccard similarity of the two shingle sets (no estimation noise in what is dropped).
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import rensa

from .shingles import P, ngram_hashes_chunk, text_chunks

MISS_PROBABILITY = 1e-4
PAIR_CHUNK = 4096  # candidate pairs whose signatures are compared at once
MAX_PAIRS = 1 << 19  # band matches listed at once; a batch with more (a big cluster of duplicates) is halved
_U32 = next(code for code in "IL" if array(code).itemsize == 4)  # array typecode of an unsigned 32-bit int


@lru_cache(maxsize=64)
def lsh_bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows) with bands * rows == num_perm minimizing 0.3 * false-positive + 0.7 * false-negative area.

    Recall is weighted up because candidates are verified exactly afterwards.
    >>> lsh_bands(0.8, 128)
    (16, 8)
    """
    s = np.linspace(0.0, 1.0, 1001)
    best, best_err = (1, num_perm), float("inf")
    for b in (b for b in range(1, num_perm + 1) if num_perm % b == 0):
        p = 1.0 - (1.0 - s ** (num_perm // b)) ** b
        fp = np.trapezoid(np.where(s < threshold, p, 0.0), s)
        fn = np.trapezoid(np.where(s >= threshold, 1.0 - p, 0.0), s)
        err = 0.3 * fp + 0.7 * fn
        if err < best_err:
            best, best_err = (b, num_perm // b), err
    return best


@lru_cache(maxsize=64)
def min_matches(threshold: float, num_perm: int, miss: float = MISS_PROBABILITY) -> int:
    """Fewest equal signature slots that a pair at Jaccard `threshold` shows, except with probability <= `miss`.

    Each slot matches with probability J, so the count is Binomial(num_perm, J).
    >>> min_matches(0.8, 128), min_matches(0.8, 128, 1e-6)
    (84, 79)
    """
    tail = 0.0
    for k in range(num_perm + 1):
        tail += math.comb(num_perm, k) * threshold ** k * (1 - threshold) ** (num_perm - k)
        if tail > miss:
            return k
    return num_perm


def band_pairs(keys: np.ndarray, first_new: int, limit: int | None = None) -> np.ndarray | None:
    """Row pairs (earlier, later) that share a key in at least one band (column), with later >= first_new;
    None as soon as more than `limit` band matches (pairs counted once per shared band) come up.

    >>> band_pairs(np.array([[1, 7], [2, 7], [1, 9]], dtype=np.uint64), 1).tolist()
    [[0, 1], [0, 2]]
    """
    n = len(keys)
    codes = []
    found = 0
    for band in keys.T:
        order = np.argsort(band, kind="stable")  # stable: rows of one group stay in input order
        group = np.ones(n, dtype=bool)
        group[1:] = band[order[1:]] != band[order[:-1]]
        group_start = np.flatnonzero(group)[np.cumsum(group) - 1]
        rank = np.arange(n) - group_start  # rows before this one in its group
        rank[order < first_new] = 0  # rows indexed earlier are only paired with new ones
        total = int(rank.sum())
        found += total
        if limit is not None and found > limit:
            return None
        if total:
            within = np.arange(total) - np.repeat(np.cumsum(rank) - rank, rank)
            earlier = order[np.repeat(group_start, rank) + within]
            codes.append(earlier.astype(np.int64) * n + np.repeat(order, rank))
    if not codes:
        return np.zeros((0, 2), dtype=np.int64)
    codes = np.unique(np.concatenate(codes))
    return np.stack([codes // n, codes % n], axis=1)


def jaccard_at_least(a: frozenset, b: frozenset, threshold: float) -> float | None:
    """The Jaccard similarity of two sets if it is at least `threshold`, else None.

    >>> a, b = frozenset("abcd"), frozenset("abce")
    >>> jaccard_at_least(a, b, 0.5), jaccard_at_least(a, b, 0.8)
    (0.6, None)
    """
    la, lb = len(a), len(b)
    if la < threshold * lb or lb < threshold * la:
        return None  # the sizes alone rule the threshold out
    inter = len(a & b)
    sim = inter / (la + lb - inter) if inter else 0.0
    return sim if sim >= threshold else None


@dataclass
class _Batch:
    """What `NearIndex` computes for a batch of texts."""

    sig: np.ndarray  # (n, num_perm) uint32 MinHash signatures
    keys: np.ndarray  # (n, bands) uint64 LSH band keys
    live: np.ndarray  # (n,) bool: the text has shingles (a text without any is never a candidate)
    flat: np.ndarray  # shingle hashes, flat
    offsets: np.ndarray  # (n + 1,) row offsets into flat

    def rows(self, a: int, b: int) -> _Batch:
        """Rows a..b-1 as a batch of their own."""
        o = self.offsets
        return _Batch(self.sig[a:b], self.keys[a:b], self.live[a:b], self.flat[o[a]:o[b]], o[a:b + 1] - o[a])


class _Sets(dict):
    """Row -> frozenset of its shingle hashes, built on first use (most rows are never compared); rows number
    the indexed texts first, then the batch."""

    def __init__(self, built: dict, kept: _Batch, batch: _Batch):
        super().__init__(built)
        self.base = len(kept.live)
        self.sources = ((kept.flat, kept.offsets.tolist()), (batch.flat, batch.offsets.tolist()))

    def __missing__(self, row: int) -> frozenset:
        (flat, offsets), i = (self.sources[0], row) if row < self.base else (self.sources[1], row - self.base)
        self[row] = out = frozenset(flat[offsets[i]:offsets[i + 1]].tolist())
        return out


class NearIndex:
    """MinHash LSH index (see the module docstring). `add` is greedy keep-first against the texts kept so far;
    `link` lists all similar pairs and `groups` their connected groups, both indexing every text. State persists
    across calls (shards). A batch whose band matches exceed MAX_PAIRS is processed in halves."""

    def __init__(self, threshold: float, num_perm: int = 128, shingle: int = 5, unit: str = "word", seed: int = 0):
        self.threshold, self.num_perm, self.shingle, self.unit, self.seed = threshold, num_perm, shingle, unit, seed
        self.bands, self.rows = lsh_bands(threshold, num_perm)
        self.min_matches = min_matches(threshold, num_perm)
        self.labels: list[object] = []
        self._kept = self._empty()
        self._sets: dict[int, frozenset] = {}  # shingle sets of indexed texts, built on first comparison

    def _prepare(self, texts: list[str]) -> _Batch:
        parts = [self._prepare_chunk(texts[a:b]) for a, b in text_chunks(texts)] or [self._empty()]
        if len(parts) == 1:
            return parts[0]
        sizes = np.concatenate([np.diff(p.offsets) for p in parts])
        return _Batch(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("sig", "keys", "live", "flat")),
                      np.concatenate([[0], np.cumsum(sizes)]))

    def _empty(self) -> _Batch:
        return _Batch(np.zeros((0, self.num_perm), np.uint32), np.zeros((0, self.bands), np.uint64),
                      np.zeros(0, bool), np.zeros(0, np.uint64), np.zeros(1, np.int64))

    def _prepare_chunk(self, texts: list[str]) -> _Batch:
        flat, offsets = ngram_hashes_chunk(texts, self.shingle, self.unit)
        digests = rensa.RMinHash.digest_matrix_from_flat_token_hashes(flat, offsets.astype(np.uint64),
                                                                      self.num_perm, self.seed)
        rows = b"".join(array(_U32, row).tobytes() for row in digests.to_rows())  # 32-bit digests; beats np.array
        sig = np.frombuffer(rows, dtype=np.uint32).reshape(len(texts), self.num_perm)
        cols = sig.reshape(len(texts), self.bands, self.rows).astype(np.uint64)
        keys = np.zeros((len(texts), self.bands), dtype=np.uint64)
        for k in range(self.rows):
            keys = keys * P + cols[:, :, k]
        return _Batch(sig, keys, offsets[1:] > offsets[:-1], flat, offsets)

    def _candidates(self, batch: _Batch) -> list[list[int]] | None:
        """[earlier row, later row, equal slots] of the pairs that pass LSH and the pre-check, later in the batch;
        rows number the indexed texts first, then the batch. Sorted by later, then most equal slots first.
        None when the batch has more than MAX_PAIRS band matches (and more than one text)."""
        base = len(self.labels)
        live = np.flatnonzero(np.concatenate([self._kept.live, batch.live]))
        pairs = band_pairs(np.concatenate([self._kept.keys, batch.keys])[live], int(np.searchsorted(live, base)),
                           MAX_PAIRS if len(batch.live) > 1 else None)
        if pairs is None:
            return None
        pairs = live[pairs]
        sig = np.concatenate([self._kept.sig, batch.sig])
        found = [np.zeros((0, 3), dtype=np.int64)]
        for c in range(0, len(pairs), PAIR_CHUNK):
            chunk = pairs[c:c + PAIR_CHUNK]
            same = np.count_nonzero(sig[chunk[:, 0]] == sig[chunk[:, 1]], axis=1)
            ok = same >= self.min_matches
            found.append(np.column_stack([chunk[ok], same[ok]]))
        cand = np.concatenate(found)
        return cand[np.lexsort((cand[:, 0], -cand[:, 2], cand[:, 1]))].tolist()

    def _index(self, batch: _Batch, rows: list[int], labels: list, sets: _Sets) -> None:
        """Append the batch's `rows` (ascending) to the index."""
        base, k = len(self.labels), self._kept
        take = np.zeros(len(batch.live), dtype=bool)
        take[rows] = True
        counts = np.diff(batch.offsets)[take]
        self._kept = _Batch(np.concatenate([k.sig, batch.sig[take]]), np.concatenate([k.keys, batch.keys[take]]),
                            np.concatenate([k.live, batch.live[take]]),
                            np.concatenate([k.flat, batch.flat[np.repeat(take, np.diff(batch.offsets))]]),
                            np.concatenate([k.offsets, k.offsets[-1] + np.cumsum(counts)]))
        self._sets = {row: v for row, v in sets.items() if row < base}
        self._sets.update({base + j: sets[base + r] for j, r in enumerate(rows) if base + r in sets})
        self.labels += [labels[r] for r in rows]

    def add(self, texts: list[str], labels: list) -> list[tuple[object, float] | None]:
        """Per text: None (kept), or (label of a kept text it near-duplicates, their Jaccard similarity); the one
        named is, of the kept texts at or above the threshold, the one with the most equal signature slots."""
        return self._add(self._prepare(texts), labels)

    def _add(self, batch: _Batch, labels: list) -> list[tuple[object, float] | None]:
        base, n = len(self.labels), len(labels)
        candidates = self._candidates(batch)
        if candidates is None:  # a big cluster: halve the batch, so later halves only meet the texts kept before
            return self._add(batch.rows(0, n // 2), labels[:n // 2]) + self._add(batch.rows(n // 2, n), labels[n // 2:])
        sets = _Sets(self._sets, self._kept, batch)
        dup: dict[int, tuple[int, float]] = {}
        for a, b, _ in candidates:
            if b in dup or a in dup:
                continue  # b is settled, or a is a duplicate itself (pairs come sorted by later, so a is final)
            sim = jaccard_at_least(sets[a], sets[b], self.threshold)
            if sim is not None:
                dup[b] = (a, sim)
        out: list[tuple[object, float] | None] = [None] * n
        for b, (a, sim) in dup.items():
            out[b - base] = (self.labels[a] if a < base else labels[a - base], sim)
        self._index(batch, [i for i in range(n) if base + i not in dup], labels, sets)
        return out

    def link(self, texts: list[str]) -> list[tuple[int, int]]:
        """All (earlier, later) index pairs with Jaccard >= threshold that LSH proposes, sorted; every text is
        indexed. Indexes count from this batch's first text (texts of earlier batches are negative)."""
        return self._link(self._prepare(texts))

    def groups(self, texts: list[str]) -> list[int]:
        """A group number per text: texts joined by such pairs share the index of their group's first text
        (counted like `link`). A pair already in one group is not verified, so a big cluster costs little."""
        base, joined = len(self.labels), _Groups()
        self._link(self._prepare(texts), joined)
        return [joined.find(base + i) - base for i in range(len(texts))]

    def _link(self, batch: _Batch, joined: _Groups | None = None) -> list[tuple[int, int]]:
        base, n = len(self.labels), len(batch.live)
        candidates = self._candidates(batch)
        if candidates is None:
            first, second = self._link(batch.rows(0, n // 2), joined), self._link(batch.rows(n // 2, n), joined)
            return first + [(a + n // 2, b + n // 2) for a, b in second]
        sets = _Sets(self._sets, self._kept, batch)
        pairs = []
        for a, b, _ in candidates:
            if joined is not None and joined.find(a) == joined.find(b):
                continue
            if jaccard_at_least(sets[a], sets[b], self.threshold) is not None:
                pairs.append((b - base, a - base))
                if joined is not None:
                    joined.union(a, b)
        self._index(batch, list(range(n)), list(range(n)), sets)
        return [(a, b) for b, a in sorted(pairs)]


class _Groups:
    """Union-find over row numbers; a group is named by its smallest row."""

    def __init__(self):
        self.parent: dict[int, int] = {}

    def find(self, i: int) -> int:
        parent = self.parent
        while parent.get(i, i) != i:
            parent[i] = parent.get(parent[i], parent[i])
            i = parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        self.parent[max(ra, rb)] = min(ra, rb)
