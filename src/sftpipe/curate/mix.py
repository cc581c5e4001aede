"""mix: blend general-instruction records so they make up `ratio` of the output (10-30% is the usual advice).

The general source is read and run through the same stages as the main data before it reaches this stage
(pipeline.py does that), so it is normalized, PII-scrubbed, deduplicated (against the main data too) and
filtered. This stage samples from what survived, with a seed; the records not sampled are dropped with
reason `not_sampled`, so records in (main + general) = kept + rejected here too.
"""

from __future__ import annotations

import random
from typing import Any

from ..conversation import Conversation
from .base import Drop
from ..config.curate import MixConfig


def general_count(n_main: int, ratio: float) -> int:
    """How many general records make them `ratio` of the output.

    >>> general_count(80, 0.2)
    20
    """
    return round(ratio * n_main / (1.0 - ratio)) if ratio > 0 else 0


def pick(n_main: int, n_pool: int, cfg: MixConfig) -> tuple[list[int], dict[str, Any], dict[str, Any]]:
    """Which pool records to add (sorted positions: a seeded sample), the stage's stats, and the details of a
    record left out (`not_sampled`).

    >>> pick(8, 5, MixConfig(enabled=True, source="x", ratio=0.2, seed=0))[1]["general_added"]
    2
    """
    want = general_count(n_main, cfg.ratio)
    take = min(want, n_pool)
    picked = sorted(random.Random(cfg.seed).sample(range(n_pool), take))
    total = n_main + take
    stats: dict[str, Any] = {"general_available": n_pool, "general_wanted": want, "general_added": take,
                             "achieved_ratio": round(take / total, 4) if total else 0.0}
    if take < want:
        stats["warning"] = (f"general source has {n_pool} usable records, {want} were needed for ratio {cfg.ratio}; "
                            "fix: give a larger source or lower the ratio")
    return picked, stats, {"ratio": cfg.ratio, "wanted": want, "available": n_pool}


def tag(meta: dict[str, Any], cfg: MixConfig, field: str | None) -> dict[str, Any]:
    """A picked record's extra fields: the mix label, and `field` (the split's stratum) set to it if missing."""
    meta = {**meta, "mix": cfg.label}
    if field and field not in meta:
        meta[field] = cfg.label
    return meta


class Mix:
    """Append a seeded sample of the general pool to the main records (main records first, in order)."""

    name = "mix"

    def __init__(self, cfg: MixConfig, general: list[Conversation], field: str | None = None):
        self.cfg, self.general, self.field = cfg, general, field
        self.stats: dict[str, Any] = {}

    def n_in(self, convs: list[Conversation]) -> int:
        """Records that enter this stage: the main records plus the general pool."""
        return len(convs) + len(self.general)

    def apply(self, convs: list[Conversation], pool=None, progress=None) -> tuple[list[Conversation], list[Drop]]:
        picked, stats, details = pick(len(convs), len(self.general), self.cfg)
        chosen = set(picked)
        added = [Conversation(c.messages, tag(c.meta, self.cfg, self.field), c.source) for i, c in
                 enumerate(self.general) if i in chosen]
        dropped = [Drop(c, self.name, "not_sampled", details) for i, c in enumerate(self.general) if i not in chosen]
        self.stats.update(stats)
        if progress:
            progress(len(convs))
        return list(convs) + added, dropped
