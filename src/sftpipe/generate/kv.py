"""The engine's KV cache layers: new columns are written into spare capacity instead of concatenated.

transformers' `DynamicLayer` appends with `torch.cat`, so every decoding step copies each layer's whole cache; on a
CPU that copy took half of the engine's time (47% of a 32-row decode of SmolLM2-135M, profiled). `SlackLayer`
keeps `keys`/`values` as views of the first columns of larger buffers and copies only when a buffer is full
(every `SPARE` steps) or when rows join or leave the batch.
"""

from __future__ import annotations

from transformers.cache_utils import DynamicLayer

SPARE = 64  # columns allocated ahead: one copy per 64 decoding steps instead of one per step


class SlackLayer(DynamicLayer):
    """A full-attention cache layer whose `keys`/`values` are the filled columns of buffers with spare room."""

    def __init__(self, parts: list[tuple], width: int, spare: int = SPARE):
        """The rows of every `(keys, values)` part stacked along the batch, each right-aligned to `width`
        columns (its missing left columns are zeros, which the engine's mask hides)."""
        super().__init__()
        keys0, values0 = parts[0]
        self.lazy_initialization(keys0, values0)
        rows = sum(k.shape[0] for k, _ in parts)
        self._k = keys0.new_zeros((rows, keys0.shape[1], width + spare, keys0.shape[3]))
        self._v = values0.new_zeros((rows, values0.shape[1], width + spare, values0.shape[3]))
        start = 0
        for keys, values in parts:
            n = keys.shape[2]
            self._k[start:start + keys.shape[0], :, width - n:width] = keys
            self._v[start:start + keys.shape[0], :, width - n:width] = values
            start += keys.shape[0]
        self._view(width)

    def _view(self, n: int) -> None:
        self.keys, self.values = self._k[:, :, :n], self._v[:, :, :n]

    def update(self, key_states, value_states, *args, **kwargs):
        """Append the new columns in place (growing the buffers by `SPARE` when full); returns the filled views."""
        n, add = self.keys.shape[2], key_states.shape[2]
        if n + add > self._k.shape[2]:
            grown = SlackLayer([(self.keys, self.values)], n, spare=max(add, SPARE))
            self._k, self._v = grown._k, grown._v
        self._k[:, :, n:n + add] = key_states
        self._v[:, :, n:n + add] = value_states
        self._view(n + add)
        return self.keys, self.values

    def select(self, index, lead: int) -> None:
        """Keep the rows at `index` and drop the first `lead` columns (padding in every kept row)."""
        n = self.keys.shape[2]
        kept = SlackLayer([(self.keys.index_select(0, index)[:, :, lead:],
                            self.values.index_select(0, index)[:, :, lead:])], n - lead)
        self._k, self._v = kept._k, kept._v
        self._view(n - lead)
