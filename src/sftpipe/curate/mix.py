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
        want = general_count(len(convs), self.cfg.ratio)
        take = min(want, len(self.general))
        picked = set(random.Random(self.cfg.seed).sample(range(len(self.general)), take))
        added, dropped = [], []
        for i, conv in enumerate(self.general):
            if i in picked:
                meta = {**conv.meta, "mix": self.cfg.label}
                if self.field and self.field not in meta:
                    meta[self.field] = self.cfg.label
                added.append(Conversation(conv.messages, meta, conv.source))
            else:
                dropped.append(Drop(conv, self.name, "not_sampled", {"ratio": self.cfg.ratio, "wanted": want,
                                                                     "available": len(self.general)}))
        total = len(convs) + len(added)
        self.stats.update({"general_available": len(self.general), "general_wanted": want,
                           "general_added": len(added), "achieved_ratio": round(len(added) / total, 4) if total
                           else 0.0})
        if take < want:
            self.stats["warning"] = (f"general source has {len(self.general)} usable records, {want} were needed "
                                     f"for ratio {self.cfg.ratio}; fix: give a larger source or lower the ratio")
        if progress:
            progress(len(convs))
        return list(convs) + added, dropped
