"""split: a seeded, stratified held-out split in which near-duplicates never straddle two splits.

Records are first tied into groups: MinHash LSH (rensa) on the prompt links any two records whose shingle
Jaccard similarity is at least `group_threshold` (lower than the dedup threshold, so the near-duplicates that
dedup kept are caught too), MinHash on the whole conversation links those at least `conversation_threshold` alike
(below the dedup threshold too: a MinHash estimate near the threshold misses some pairs whose exact similarity
reaches it, and `sftpipe doctor` measures exactly), and linked records form one group (union-find). Each group
takes the stratum (`by` field) of its first record. Within each stratum, groups are shuffled with the seed and each
goes to the split furthest below its target count. Nothing is dropped here; each split keeps input order.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

import numpy as np

from ..conversation import Conversation
from .base import Drop, key_text, norm_text
from ..config.curate import SplitConfig
from .minhash import NearIndex, Sketch
from .shingles import shingles

MISSING = "(none)"


def near_groups(texts: list[str], threshold: float, num_perm: int = 128, shingle: int = 5, seed: int = 0,
                also: tuple[list[str], float] | None = None) -> list[int]:
    """A group number per text: texts linked by MinHash similarity >= threshold share one (union-find). Texts
    that normalize to the same words join at once; only distinct ones go to the index (`NearIndex.groups`).
    `also` is a second view of the same records, (texts, threshold), whose links are added.

    >>> near_groups(["where is my order 1 please help", "where is my order 2 please help", "refund"], 0.3, shingle=2)
    [0, 0, 2]
    >>> near_groups(["a b", "c d", "e f"], 0.9, shingle=1, also=(["x y z", "x y z w", "q"], 0.5))
    [0, 0, 2]
    """
    views = []
    for view, thr in [(texts, threshold)] + ([also] if also else []):
        index = NearIndex(thr, num_perm, shingle, "word", seed)
        views.append((index, [norm_text(t) for t in view], index.sketch(view)))
    return group_views(len(texts), views)


def group_views(n: int, views: Iterable[tuple[NearIndex, list, Sketch]]) -> list[int]:
    """`near_groups` over views computed already: (a fresh index, each text's normalized form or a digest of it
    (empty: no words), each text's sketch from that index). `views` may be a generator: each view is let go
    before the next is asked for."""
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(a: int, b: int) -> None:
        ra, rb = find(a), find(b)
        parent[max(ra, rb)] = min(ra, rb)

    for index, norms, sketch in views:
        first: dict = {}
        distinct: list[int] = []
        for i, norm in enumerate(norms):
            j = first.setdefault(norm, i) if norm else i  # a text without words is never linked
            if j == i:
                distinct.append(i)
            else:
                union(j, i)
        only = np.zeros(n, dtype=bool)
        only[distinct] = True
        groups = index.groups_sketch(sketch, only=only)
        for i in distinct:
            union(groups[i], i)
        del index, norms, sketch, first, groups  # the index holds the sketch; free both before the next view
    return [find(i) for i in range(n)]


def stratum(conv: Conversation, field: str | None) -> str:
    """The record's stratum: the string value of `field` in its meta, or "(none)"."""
    value = conv.meta.get(field) if field else None
    return MISSING if value is None else str(value)


class Split:
    """Assign every record to one split (train, eval, ...); `assign` returns split name -> records."""

    name = "split"

    def __init__(self, cfg: SplitConfig, strict: bool = False):
        self.cfg, self.strict = cfg, strict
        self.stats: dict[str, Any] = {}

    def assign(self, convs: list[Conversation]) -> dict[str, list[Conversation]]:
        """Split name -> its records, in input order."""
        texts = [key_text(c, "prompt") or key_text(c, "conversation") for c in convs]
        if not any(shingles(t, 5) for t in texts):
            groups = list(range(len(convs)))
        else:
            groups = near_groups(texts, self.cfg.group_threshold, seed=self.cfg.seed,
                                 also=([c.dialogue_text() for c in convs], self.cfg.conversation_threshold))
        names = self.assign_groups(groups, [stratum(c, self.cfg.by) for c in convs])
        out: dict[str, list[Conversation]] = {name: [] for name in self.cfg.ratios()}
        for conv, name in zip(convs, names):
            out[name].append(conv)
        return out

    def views(self) -> tuple[NearIndex, NearIndex]:
        """Fresh indexes for the split's two views: the prompt, and the whole dialogue."""
        return (NearIndex(self.cfg.group_threshold, 128, 5, "word", self.cfg.seed),
                NearIndex(self.cfg.conversation_threshold, 128, 5, "word", self.cfg.seed))

    def assign_groups(self, groups: list[int], strata: list[str]) -> list[str]:
        """Each record's split, given its group and stratum: groups are shuffled per stratum with the seed and
        each goes to the split furthest below its target count; records the stats."""
        ratios = self.cfg.ratios()
        members: dict[int, list[int]] = defaultdict(list)
        for i, g in enumerate(groups):
            members[g].append(i)
        by_stratum: dict[str, list[int]] = defaultdict(list)
        for g in sorted(members):
            by_stratum[strata[members[g][0]]].append(g)
        rng = random.Random(self.cfg.seed)
        where: list[str] = [""] * len(groups)
        per_stratum: dict[str, dict[str, int]] = {}
        for s in sorted(by_stratum):
            gs = by_stratum[s]
            rng.shuffle(gs)
            size = sum(len(members[g]) for g in gs)
            count = Counter(dict.fromkeys(ratios, 0))
            for g in gs:
                name = max(ratios, key=lambda n: (ratios[n] * size - count[n], n != "train"))
                count[name] += len(members[g])
                for i in members[g]:
                    where[i] = name
            per_stratum[s] = dict(count)
        sizes = Counter(where)
        self.stats.update({"groups": len(members), "grouped_records": sum(len(m) for m in members.values()
                                                                          if len(m) > 1),
                           "per_stratum": per_stratum, "sizes": {name: sizes[name] for name in ratios}})
        return where

    def apply(self, convs: list[Conversation], pool=None, progress=None) -> tuple[list[Conversation], list[Drop]]:
        """Split keeps every record; see `assign` for the assignment."""
        self.assignment = self.assign(convs)
        if progress:
            progress(len(convs))
        return list(convs), []
