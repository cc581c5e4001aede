"""Small statistics for eval reports: proportion intervals, pairwise win rates, bootstrap CIs, length control.

Pairwise outcomes are per prompt, from model A's side: 1 = A wins, 0.5 = tie, 0 = B wins.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

VERDICTS = ("A", "B", "tie", "invalid")


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion; `n == 0` gives the uninformative (0.0, 1.0).

    >>> tuple(round(x, 4) for x in wilson_interval(5, 10))
    (0.2366, 0.7634)
    """
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"wilson_interval needs 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    z2 = z * z
    denom = 1 + z2 / n
    center = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    return max(0.0, center - half), min(1.0, center + half)


def _outcomes(outcomes: Sequence[float]) -> np.ndarray:
    x = np.asarray(outcomes, dtype=float)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"need a non-empty 1-D sequence of outcomes, got shape {x.shape}")
    if np.any((x < 0) | (x > 1)) or np.any(np.isnan(x)):
        bad = x[(x < 0) | (x > 1) | np.isnan(x)][0]
        raise ValueError(f"outcome {bad} is outside [0, 1]; use 1 = win, 0.5 = tie, 0 = loss")
    return x


def win_rate(outcomes: Sequence[float]) -> float:
    """(wins + 0.5 * ties) / N over per-prompt outcomes.

    >>> win_rate([1, 0.5, 0, 1])
    0.625
    """
    return float(_outcomes(outcomes).mean())


def paired_bootstrap_ci(
    outcomes: Sequence[float], *, n_boot: int = 2000, seed: int = 0, alpha: float = 0.05
) -> tuple[float, float]:
    """Percentile bootstrap CI of the win rate, resampling prompts (each prompt keeps its A/B pair together)."""
    x = _outcomes(outcomes)
    if n_boot < 1 or not 0 < alpha < 1:
        raise ValueError(f"need n_boot >= 1 and 0 < alpha < 1, got n_boot={n_boot}, alpha={alpha}")
    rng = np.random.default_rng(seed)
    n = x.size
    rows = max(1, 1_000_000 // n)  # bound memory: at most ~1M indices per chunk
    means = np.concatenate([
        x[rng.integers(0, n, size=(min(rows, n_boot - start), n))].mean(axis=1)
        for start in range(0, n_boot, rows)
    ])
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def _fit_logistic(x: np.ndarray, y: np.ndarray, ridge: np.ndarray, iters: int = 100) -> np.ndarray:
    """Ridge-penalised logistic regression y ~ sigmoid(t0 + t1 * x) with soft labels, by damped Newton steps."""
    X = np.column_stack([np.ones_like(x), x])

    def loss(t: np.ndarray) -> float:
        z = X @ t
        return float(np.sum(np.logaddexp(0, z) - y * z) + 0.5 * np.sum(ridge * t * t))

    t = np.zeros(2)
    for _ in range(iters):
        p = 1 / (1 + np.exp(-(X @ t)))
        grad = X.T @ (p - y) + ridge * t
        hess = (X * (p * (1 - p))[:, None]).T @ X + np.diag(ridge)
        step = np.linalg.solve(hess, grad)
        scale, current = 1.0, loss(t)
        while loss(t - scale * step) > current and scale > 1e-8:
            scale /= 2
        t = t - scale * step
        if np.max(np.abs(scale * step)) < 1e-10:
            break
    return t


def length_controlled_win_rate(outcomes: Sequence[float], len_a: Sequence[int], len_b: Sequence[int]) -> float:
    """Win rate of A predicted at zero length difference (a simplified AlpacaEval-LC).

    Method: x = ln((len_a + 1) / (len_b + 1)), scaled by its root mean square (not centred, so x = 0 still means
    equal length). Fit P(A wins) = sigmoid(t0 + t1 * x) by logistic regression on the outcomes (ties count as
    0.5 soft labels; ridge penalties of 1e-2 on t1 and 1e-6 on t0 keep it finite when length separates the
    outcomes perfectly). Report sigmoid(t0): the win rate if both answers had the same length. With no length difference
    at all this equals the raw win rate.
    """
    y = _outcomes(outcomes)
    a, b = np.asarray(len_a, dtype=float), np.asarray(len_b, dtype=float)
    if a.shape != y.shape or b.shape != y.shape:
        raise ValueError(f"len_a, len_b and outcomes must have the same length, got {a.size}, {b.size}, {y.size}")
    if np.any(a < 0) or np.any(b < 0):
        raise ValueError("lengths must be >= 0 (token or character counts)")
    x = np.log((a + 1) / (b + 1))
    rms = math.sqrt(float(np.mean(x * x)))
    x = x / rms if rms > 0 else x
    t0, _ = _fit_logistic(x, y, ridge=np.array([1e-6, 1e-2]))
    return float(1 / (1 + math.exp(-t0)))


def judge_outcome(first: str, second: str) -> float:
    """Position-debiased pairwise outcome for A from two judge verdicts.

    `first` is the verdict when the judge saw (A, B), `second` when it saw (B, A); each is "A", "B", "tie" or
    "invalid" and names a position, not a model. Consistent A win -> 1.0, consistent B win -> 0.0, else 0.5.

    >>> judge_outcome("A", "B"), judge_outcome("B", "A"), judge_outcome("A", "A")
    (1.0, 0.0, 0.5)
    """
    for name, v in (("first", first), ("second", second)):
        if v not in VERDICTS:
            raise ValueError(f"judge verdict {name}={v!r} is not one of {VERDICTS}; "
                             "map unparsable judge replies to 'invalid'")
    if first == "A" and second == "B":
        return 1.0
    if first == "B" and second == "A":
        return 0.0
    return 0.5


def frequency_deciles(counts: dict[str, int], categories: Sequence[str] = ()) -> dict[str, int]:
    """Decile (1 = most frequent .. 10 = rarest) of each category in the cumulative training-frequency mass.

    Categories are ranked by count (descending, ties by name); a category's decile is the tenth of the
    cumulative mass in which it starts: 1 + floor(10 * count of all more frequent categories / total).
    `categories` not in `counts` (never seen in training) go to decile 10.

    >>> frequency_deciles({"a": 50, "b": 30, "c": 15, "d": 5}, ["e"])
    {'a': 1, 'b': 6, 'c': 9, 'd': 10, 'e': 10}
    """
    if any(v < 0 for v in counts.values()):
        raise ValueError(f"category counts must be >= 0, got {counts}")
    total = sum(counts.values())
    out: dict[str, int] = {}
    before = 0
    for name, count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        out[name] = min(10, 1 + (10 * before) // total) if total and count else 10
        before += count
    for name in categories:
        out.setdefault(name, 10)
    return out
