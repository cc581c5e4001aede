"""Token labels: `IGNORE_INDEX`, the label of a token that is not trained, and `label_runs`, the one walk over a
label list that splits it into trained and untrained spans.

A rendered example's `labels` line up with its `input_ids`: the token's own id where it is trained (unshifted;
the loss predicts it from the position before), `IGNORE_INDEX` elsewhere. The value is PyTorch's default
`ignore_index` for cross-entropy, so batches can go to `F.cross_entropy` as they are.
"""

from __future__ import annotations

from collections.abc import Sequence

IGNORE_INDEX = -100


def label_runs(labels: Sequence[int]) -> list[tuple[int, int, bool]]:
    """The labels as maximal runs `(start, end, trained)` of token positions, in order, covering every token.

    >>> label_runs([IGNORE_INDEX, IGNORE_INDEX, 5, 6, IGNORE_INDEX, 7])
    [(0, 2, False), (2, 4, True), (4, 5, False), (5, 6, True)]
    >>> label_runs([])
    []
    """
    runs: list[tuple[int, int, bool]] = []
    start = 0
    for i in range(1, len(labels) + 1):
        if i == len(labels) or (labels[i] != IGNORE_INDEX) != (labels[start] != IGNORE_INDEX):
            runs.append((start, i, labels[start] != IGNORE_INDEX))
            start = i
    return runs
