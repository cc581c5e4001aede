"""Near-duplicate search with MinHash LSH in time linear in the texts (used by the dedup and split stages).

For a batch of texts:
1. shingles: word n-gram hashes, computed in bulk (see shingles.py), kept sorted and distinct per text;
2. signatures: rensa computes the MinHash signature of every text from the flat shingle hashes;
3. candidates: the signature is cut into LSH bands; numpy numbers the buckets of equal band keys, and each text
   is offered the earlier indexed texts of its buckets, at most BUCKET_CAP per bucket (templated text fills some
   buckets with thousands of texts; listing every pair there made the cost grow with the square of the input);
4. pre-check: a candidate pair must agree on at least `min_matches` signature slots, a bound that a pair at the
   threshold misses with probability <= MISS_PROBABILITY (1e-4; more similar pairs miss it even less), while the
   LSH bands themselves miss such a pair about 5% of the time (16 bands of 8 rows at 0.8), as datasketch's do;
5. decision: the exact Jaccard similarity of the two shingle sets (no estimation noise in what is dropped).
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import rensa

from .shingles import P, ngram_hashes_chunk, text_chunks

MISS_PROBABILITY = 1e-4
BUCKET_CAP = 64  # earlier texts one LSH bucket offers a new text (the first ones indexed)
ROWS_AT_ONCE = 1 << 16
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


def similarities(sk: Sketch, me: int, rows: np.ndarray) -> np.ndarray:
    """The exact Jaccard similarity of row `me`'s shingle set with each of `rows`' (one vectorized pass).

    >>> sk = Sketch(np.zeros((3, 1)), np.zeros((3, 1)), np.array([1, 2, 3, 4, 1, 2, 3, 5, 9]), np.array([0, 4, 8, 9]))
    >>> similarities(sk, 0, np.array([1, 2])).tolist()
    [0.6, 0.0]
    """
    mine = sk.shingles(me)
    starts, lens = sk.offsets[rows], sk.offsets[rows + 1] - sk.offsets[rows]
    total = int(lens.sum())
    if not total or not len(mine):
        return np.zeros(len(rows))
    vals = sk.flat[np.repeat(starts - (np.cumsum(lens) - lens), lens) + np.arange(total)]
    pos = np.minimum(np.searchsorted(mine, vals), len(mine) - 1)
    hits = np.concatenate([[0], np.cumsum(mine[pos] == vals)])
    ends = np.cumsum(lens)
    inter = hits[ends] - hits[ends - lens]
    return inter / np.maximum(lens + len(mine) - inter, 1)


@dataclass
class Sketch:
    """What the index keeps of each text, computed per text (any worker can compute it): its MinHash signature,
    LSH band keys and its shingle hashes, sorted and distinct (flat, with row offsets)."""

    sig: np.ndarray  # (n, num_perm) uint32
    keys: np.ndarray  # (n, bands) uint64
    flat: np.ndarray  # uint32: the low 32 bits of each shingle hash
    offsets: np.ndarray  # (n + 1,) int64

    def __len__(self) -> int:
        return len(self.sig)

    def shingles(self, row: int) -> np.ndarray:
        """Row `row`'s sorted distinct shingle hashes."""
        return self.flat[self.offsets[row]:self.offsets[row + 1]]

    def take(self, rows: np.ndarray) -> Sketch:
        """The given rows (ascending) as a sketch of their own."""
        counts = np.diff(self.offsets)[rows]
        flat_rows = np.repeat(np.arange(len(self)), np.diff(self.offsets))
        return Sketch(self.sig[rows], self.keys[rows], self.flat[np.isin(flat_rows, rows)],
                      np.concatenate([[0], np.cumsum(counts)]).astype(np.int64))

    @staticmethod
    def concat(parts: list[Sketch]) -> Sketch:
        """The rows of `parts`, in order, as one sketch (a single part is returned as is)."""
        if len(parts) == 1:
            return parts[0]
        return Sketch.join(parts, sum(len(p) for p in parts), sum(len(p.flat) for p in parts))

    @staticmethod
    def join(parts: Iterable[Sketch], rows: int, flat: int) -> Sketch:
        """The rows of `parts` (an iterable, consumed once; `rows` rows and `flat` shingles in all), in order, as
        one sketch whose arrays are allocated once, so parts read one at a time never exist twice in memory."""
        out: Sketch | None = None
        r = f = 0
        for part in parts:
            if out is None:
                out = Sketch(np.empty((rows, part.sig.shape[1]), part.sig.dtype),
                             np.empty((rows, part.keys.shape[1]), part.keys.dtype),
                             np.empty(flat, part.flat.dtype), np.zeros(rows + 1, np.int64))
            m, t = len(part), len(part.flat)
            out.sig[r:r + m], out.keys[r:r + m], out.flat[f:f + t] = part.sig, part.keys, part.flat
            out.offsets[r + 1:r + m + 1] = part.offsets[1:] + f
            r, f = r + m, f + t
        if out is None:
            raise ValueError("Sketch.join needs at least one part")
        assert (r, f) == (rows, flat), "Sketch.join: the parts do not add up to the sizes given"
        return out


def bucket_ids(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per band (column): a dense bucket number for each row, and whether the row shares its bucket with another.

    >>> ids, shared = bucket_ids(np.array([[5, 1], [5, 2], [6, 1]], dtype=np.uint64))
    >>> ids.tolist(), shared.tolist()
    ([[0, 0], [0, 1], [1, 0]], [[True, True], [True, False], [False, True]])
    """
    ids = np.empty(keys.shape, dtype=np.int64)
    shared = np.empty(keys.shape, dtype=bool)
    for j in range(keys.shape[1]):
        _, inv, counts = np.unique(keys[:, j], return_inverse=True, return_counts=True)
        ids[:, j], shared[:, j] = inv, counts[inv] > 1
    return ids, shared


class NearIndex:
    """MinHash LSH index (see the module docstring) whose cost grows linearly with the texts. `add` is greedy
    keep-first against the texts kept so far; `groups` links every text to the earlier ones it is similar to.
    State persists across calls (shards).

    Each LSH bucket offers a new text at most `cap` earlier indexed texts (the first ones), so a bucket that
    templated text fills with thousands of texts costs `cap` comparisons per text, not thousands.
    """

    def __init__(self, threshold: float, num_perm: int = 128, shingle: int = 5, unit: str = "word", seed: int = 0,
                 cap: int = BUCKET_CAP):
        self.threshold, self.num_perm, self.shingle, self.unit, self.seed = threshold, num_perm, shingle, unit, seed
        self.bands, self.rows = lsh_bands(threshold, num_perm)
        self.min_matches = min_matches(threshold, num_perm)
        self.cap = cap
        self.labels: list[object] = []
        self._parts: list[tuple[Sketch, np.ndarray | None]] = []  # indexed rows: (sketch, its rows or all)

    def _empty(self) -> Sketch:
        return Sketch(np.zeros((0, self.num_perm), np.uint32), np.zeros((0, self.bands), np.uint64),
                      np.zeros(0, np.uint32), np.zeros(1, np.int64))

    def sketch(self, texts: list[str]) -> Sketch:
        """The sketch of every text (see `Sketch`)."""
        parts = [self._sketch_chunk(texts[a:b]) for a, b in text_chunks(texts)]
        return Sketch.concat(parts) if parts else self._empty()

    def _sketch_chunk(self, texts: list[str]) -> Sketch:
        flat, offsets = ngram_hashes_chunk(texts, self.shingle, self.unit)
        digests = rensa.RMinHash.digest_matrix_from_flat_token_hashes(flat, offsets.astype(np.uint64),
                                                                      self.num_perm, self.seed)
        rows = b"".join(array(_U32, r).tobytes() for r in digests.to_rows())  # 32-bit digests; beats np.array
        sig = np.frombuffer(rows, dtype=np.uint32).reshape(len(texts), self.num_perm)
        cols = sig.reshape(len(texts), self.bands, self.rows).astype(np.uint64)
        keys = np.zeros((len(texts), self.bands), dtype=np.uint64)
        for k in range(self.rows):
            keys = keys * P + cols[:, :, k]
        # the sets compared exactly keep 32 bits of each shingle hash (half the memory; two distinct shingles of
        # a compared pair share them with probability ~1e-5 per pair)
        row = np.repeat(np.arange(len(texts)), np.diff(offsets))
        short = flat.astype(np.uint32)
        order = np.lexsort((short, row))
        short, row = short[order], row[order]
        first = np.ones(len(short), dtype=bool)
        first[1:] = (short[1:] != short[:-1]) | (row[1:] != row[:-1])
        counts = np.bincount(row[first], minlength=len(texts))
        return Sketch(sig, keys, short[first], np.concatenate([[0], np.cumsum(counts)]).astype(np.int64))

    def add(self, texts: list[str], labels: list) -> list[tuple[object, float] | None]:
        """Per text: None (kept), or (label of a kept text it near-duplicates, their Jaccard similarity); the one
        named is, of the kept texts offered at or above the threshold, the one with the most equal signature
        slots (then the earliest)."""
        return self.add_sketch(self.sketch(texts), labels)

    def add_sketch(self, batch: Sketch, labels: list, only: np.ndarray | None = None
                   ) -> list[tuple[object, float] | None]:
        """`add` on texts sketched already; with `only` (a bool per text), the other texts are left out (None)."""
        base, hits = len(self.labels), {}

        def first_match(i: int, row: int, sim: float) -> bool:
            hits[i] = (self.labels[row] if row < base else labels[row - base], sim)
            return True  # offers come best first: the first verified one is the answer

        self._index(batch, self._scan(batch, keep_all=False, on_match=first_match, only=only), labels)
        return [hits.get(i) for i in range(len(batch))]

    def groups(self, texts: list[str]) -> list[int]:
        """A group number per text: texts linked by Jaccard >= threshold (among the pairs LSH offers) share the
        index of their group's first text (texts of earlier calls count negative). Every text is indexed."""
        return self.groups_sketch(self.sketch(texts))

    def groups_sketch(self, batch: Sketch, only: np.ndarray | None = None) -> list[int]:
        """`groups` on texts sketched already; with `only` (a bool per text), the other texts stay alone."""
        base = len(self.labels)
        joined = _Groups()

        def link(i: int, row: int, sim: float) -> bool:
            joined.union(row, base + i)
            return False  # go on: the text may join more groups

        indexed = self._scan(batch, keep_all=True, on_match=link, only=only,
                             skip=lambda i, row: joined.find(row) == joined.find(base + i))
        self._index(batch, indexed, list(range(base, base + len(batch))))
        return [joined.find(base + i) - base for i in range(len(batch))]

    def _scan(self, batch: Sketch, *, keep_all: bool, on_match, skip=None, only: np.ndarray | None = None
              ) -> list[int]:
        """Visit the batch's texts in order; offer each the earlier indexed texts of its buckets (at most `cap`
        per bucket), pre-checked by equal signature slots, most equal first, then verified by exact Jaccard.
        `on_match(i, row, sim)` returns True to stop offering. Returns the batch rows that get indexed: all
        (`keep_all`), or those that matched nothing."""
        base, n = len(self.labels), len(batch)
        every = Sketch.concat([self._indexed(), batch]) if base else batch
        ids, shared = bucket_ids(every.keys)
        live = np.diff(every.offsets) > 0  # a text without shingles is never offered nor offered to
        if only is not None:
            live[base:] &= only
        shared &= live[:, None]
        members: list[dict[int, list[int]]] = [{} for _ in range(self.bands)]
        for j in range(self.bands):
            rows = np.flatnonzero(shared[:base, j])  # indexed texts fill their buckets first, in order
            for row, b in zip(rows.tolist(), ids[rows, j].tolist()):
                bucket = members[j].setdefault(b, [])
                if len(bucket) < self.cap:
                    bucket.append(row)
        indexed: list[int] = []
        for i in range(n):
            if i % ROWS_AT_ONCE == 0:  # Python lists of a block of rows (of all rows they would take gigabytes)
                block_ids = ids[base + i:base + i + ROWS_AT_ONCE].tolist()
                block_shared = shared[base + i:base + i + ROWS_AT_ONCE].tolist()
            if only is not None and not only[i]:
                continue
            k = i % ROWS_AT_ONCE
            mine = [(j, b) for j, (b, s) in enumerate(zip(block_ids[k], block_shared[k])) if s]
            found = False
            cands = {row for j, b in mine for row in members[j].get(b, ())}
            if cands:
                found = self._offer(every, base + i, np.fromiter(cands, dtype=np.int64, count=len(cands)),
                                    on_match, skip)
            if keep_all or not found:
                indexed.append(i)
                for j, b in mine:
                    bucket = members[j].setdefault(b, [])
                    if len(bucket) < self.cap:
                        bucket.append(base + i)
        return indexed

    def _offer(self, every: Sketch, me: int, cands: np.ndarray, on_match, skip) -> bool:
        """Offer `cands` to text `me` (rows of `every`), most equal signature slots first, then earliest; True when
        at least one verified."""
        same = np.count_nonzero(every.sig[cands] == every.sig[me], axis=1)
        ok = same >= self.min_matches
        cands, same = cands[ok], same[ok]
        if not len(cands):
            return False
        order = np.lexsort((cands, -same))
        cands = cands[order]
        sims = similarities(every, me, cands)
        matched = False
        for k in np.flatnonzero(sims >= self.threshold).tolist():
            row = int(cands[k])
            if skip is not None and skip(me - len(self.labels), row):
                continue
            matched = True
            if on_match(me - len(self.labels), row, float(sims[k])):
                return True
        return matched

    def _index(self, batch: Sketch, rows: list[int], labels: list) -> None:
        """Append the batch's `rows` (ascending) to the index; they are copied out only if another call comes."""
        self._parts.append((batch, None if len(rows) == len(batch) else np.asarray(rows, dtype=np.int64)))
        self.labels += [labels[r] for r in rows]

    def _indexed(self) -> Sketch:
        """Every indexed row as one sketch."""
        parts = [sk if rows is None else sk.take(rows) for sk, rows in self._parts]
        self._parts = [(Sketch.concat(parts), None)]
        return self._parts[0][0]


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
