"""Prefix caching: the KV of recent prompts (one row each, without padding), so a prompt that shares a head with
one of them (the system prompt every support request carries) is prefilled from where they part.

Entries are whole prompts; a lookup finds the longest common prefix with any of them, in tokens. Positions are
absolute from the prompt's first token, so a cached head is valid for any prompt that starts with it.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np


def common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    """How many leading tokens `a` and `b` share.

    >>> common_prefix(np.array([1, 2, 3]), np.array([1, 2, 4, 5]))
    2
    """
    n = min(len(a), len(b))
    differ = np.flatnonzero(a[:n] != b[:n])
    return int(differ[0]) if len(differ) else n


class PrefixCache:
    """Up to `entries` prompts' per-layer (keys, values), least recently used dropped first; heads shorter than
    `min_tokens` are not worth a separate prefill."""

    def __init__(self, entries: int = 8, min_tokens: int = 16):
        self.entries, self.min_tokens = entries, min_tokens
        self.items: OrderedDict[bytes, tuple[np.ndarray, list[tuple]]] = OrderedDict()
        self.hits = self.saved = 0  # lookups served, prompt tokens not prefilled

    def lookup(self, ids: list[int]) -> tuple[int, list[tuple]]:
        """(n, layers): the longest cached head of `ids` (at most all but its last token, whose logits are
        needed) and its per-layer (keys, values) cut to n columns; (0, []) when none reaches `min_tokens`."""
        query = np.asarray(ids, dtype=np.int64)
        best, layers, key = 0, [], None
        for k, (tokens, kv) in self.items.items():
            n = min(common_prefix(query, tokens), len(ids) - 1)
            if n > best:
                best, layers, key = n, kv, k
        if best < self.min_tokens:
            return 0, []
        self.items.move_to_end(key)
        self.hits, self.saved = self.hits + 1, self.saved + best
        return best, [(k[:, :, :best], v[:, :, :best]) for k, v in layers]

    def add(self, ids: list[int], layers: list[tuple]) -> None:
        """Keep a prompt's per-layer (keys, values) (one row, its columns exactly the prompt's tokens)."""
        if len(ids) < self.min_tokens:
            return
        tokens = np.asarray(ids, dtype=np.int64)
        key = tokens.tobytes()
        self.items[key] = (tokens, [(k.clone(), v.clone()) for k, v in layers])
        self.items.move_to_end(key)
        while len(self.items) > self.entries:
            self.items.popitem(last=False)
