"""Shingles of normalized text, and their 64-bit hashes computed in bulk (used by near-duplicate search).

Words follow `norm_text` (casefold, punctuation dropped, whitespace split). `ngram_hashes` hashes every word in
one numpy pass over the bytes of a chunk of texts (no Python work per word) and rolls word hashes into n-gram
hashes; equal n-grams get equal hashes in any text, so hash sets stand in for the string sets of `shingles`.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .base import norm_text

P = np.uint64(0x100000001B3)  # FNV prime: the polynomial base for word bytes and for n-grams of words
TEXT_CHUNK = 1 << 18  # characters processed at once: arrays that stay in cache make this several times faster
# norm_text's rules for ASCII bytes: punctuation and control characters are dropped, whitespace (as str.split sees
# it) separates words, the rest (letters, digits, "_", and every byte of a non-ASCII character) makes words.
_DROP = bytes(i for i in range(128) if not (chr(i).isalnum() or chr(i) == "_" or chr(i).isspace()))
_SPACE = np.array([i < 128 and chr(i).isspace() for i in range(256)])
_BYTE = np.array([0 if _SPACE[i] else ord(chr(i).lower()) + 1 if i < 128 else i + 1 for i in range(256)],
                 dtype=np.uint64)  # a byte's value in a word's polynomial hash (case folded; 0: not in a word)


def shingles(text: str, n: int, unit: str = "word") -> list[str]:
    """The set of word or character n-grams of the normalized text (the whole text if it is shorter than n).

    >>> shingles("Where is my order?", 2)
    ['where is', 'is my', 'my order']
    """
    norm = norm_text(text)
    if unit == "char":
        return sorted({norm[i:i + n] for i in range(max(1, len(norm) - n + 1))}) if norm else []
    words = norm.split()
    if len(words) <= n:
        return [" ".join(words)] if words else []
    return list(dict.fromkeys(" ".join(words[i:i + n]) for i in range(len(words) - n + 1)))


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer: spreads integers over 64 bits (vectorized, wraps on overflow)."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@lru_cache(maxsize=8)
def _powers(size: int, inverse: bool = False) -> np.ndarray:
    """P**0 .. P**(size-1) modulo 2**64, or the powers of P's inverse (P is odd, so it has one)."""
    base = np.uint64(pow(int(P), -1, 1 << 64)) if inverse else P
    return np.concatenate([[np.uint64(1)], np.cumprod(np.full(size - 1, base, dtype=np.uint64))])


def word_hashes(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of the words of `norm_text(t).split()` for every text, flat, and the word count per text.

    A word's hash depends only on its normalized bytes.
    >>> h, n = word_hashes(["Where's my order?", "my ORDER -"])
    >>> n.tolist(), h[1] == h[3], h[2] == h[4]
    ([3, 2], np.True_, np.True_)
    """
    parts = [(t if t.isascii() else norm_text(t)).encode("utf-8").translate(None, _DROP) for t in texts]
    sizes = np.fromiter(map(len, parts), dtype=np.int64, count=len(parts))
    data = np.frombuffer(b"\n".join(parts), dtype=np.uint8)
    space = _SPACE[data]
    first = ~space
    first[1:] &= space[:-1]
    starts = np.flatnonzero(first)  # each word's first byte
    if not len(starts):
        return np.zeros(0, dtype=np.uint64), np.zeros(len(texts), dtype=np.int64)
    # polynomial hash of each word's bytes: sum b_k * P**k over the whole chunk (spaces add 0), shifted to P**0
    size = 1 << (len(data) - 1).bit_length()
    sums = np.add.reduceat(_BYTE[data] * _powers(size)[:len(data)], starts)
    hashes = sums * _powers(size, inverse=True)[starts]
    text_start = np.cumsum(sizes + 1) - sizes - 1
    counts = np.bincount(np.searchsorted(text_start, starts, side="right") - 1, minlength=len(texts))
    return _mix64(hashes), counts


def text_chunks(texts: list[str], size: int | None = None) -> list[tuple[int, int]]:
    """(start, end) ranges of consecutive texts with about `size` (default TEXT_CHUNK) characters each (at least
    one text each).

    >>> text_chunks(["ab", "cd", "efgh", "i"], 6)
    [(0, 2), (2, 3), (3, 4)]
    """
    size = TEXT_CHUNK if size is None else size
    ends = np.cumsum([len(t) + 1 for t in texts])
    out, start = [], 0
    while start < len(texts):
        base = ends[start - 1] if start else 0
        end = max(start + 1, int(np.searchsorted(ends, base + size, side="right")))
        out.append((start, end))
        start = end
    return out


def ngram_hashes(texts: list[str], n: int, unit: str = "word") -> tuple[np.ndarray, np.ndarray]:
    """The uint64 hashes of every text's word (or char) n-grams, flat, plus row offsets (len(texts) + 1).

    Same units as `shingles` (a text shorter than n is one n-gram); equal n-grams get equal hashes in any text.
    """
    parts = [ngram_hashes_chunk(texts[a:b], n, unit) for a, b in text_chunks(texts)]
    if len(parts) == 1:
        return parts[0]
    flat = np.concatenate([f for f, _ in parts]) if parts else np.zeros(0, dtype=np.uint64)
    sizes = np.concatenate([np.diff(o) for _, o in parts]) if parts else np.zeros(0, dtype=np.int64)
    return flat, np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)


def ngram_hashes_chunk(texts: list[str], n: int, unit: str) -> tuple[np.ndarray, np.ndarray]:
    """`ngram_hashes` in one piece (callers keep `texts` to about TEXT_CHUNK characters)."""
    if unit == "char":
        parts = [np.frombuffer(norm_text(t).encode("utf-32-le"), dtype=np.uint32) for t in texts]
        lens = np.fromiter(map(len, parts), dtype=np.int64, count=len(parts))
        words = _mix64(np.concatenate(parts).astype(np.uint64) + np.uint64(1)) if parts else np.zeros(0, np.uint64)
    else:
        words, lens = word_hashes(texts)
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64)
    roll = words[: max(0, len(words) - n + 1)].copy()
    for k in range(1, n):
        roll = roll * P + words[k: k + len(roll)]
    counts = np.where(lens >= n, lens - n + 1, np.minimum(lens, 1))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    idx = np.arange(int(counts.sum())) - np.repeat(offsets[:-1] - starts, counts)
    out = roll[np.minimum(idx, len(roll) - 1)] if len(roll) else np.zeros(len(idx), dtype=np.uint64)
    for i in np.flatnonzero((lens > 0) & (lens < n)):  # shorter than one n-gram: the whole text is one shingle
        weights = _mix64(np.arange(1, lens[i] + 1, dtype=np.uint64))
        out[offsets[i]] = np.sum(words[starts[i]: starts[i] + lens[i]] * weights, dtype=np.uint64)
    return out, offsets
