import doctest
import itertools

import numpy as np
import pytest

from sftpipe import stats
from sftpipe.stats import (judge_outcome, length_controlled_win_rate, paired_bootstrap_ci, wilson_interval,
                                    win_rate)

Z95 = 1.959963984540054  # the exact two-sided 95% normal quantile statsmodels uses


def _wilson_by_roots(k: int, n: int, z: float) -> tuple[float, float]:
    """Wilson bounds as the roots of (p_hat - p)^2 = z^2 p (1 - p) / n, solved as a quadratic in p."""
    p_hat, c = k / n, z * z / n
    roots = np.roots([1 + c, -(2 * p_hat + c), p_hat * p_hat])
    lo, hi = sorted(float(np.real(r)) for r in roots)
    return lo, hi


@pytest.mark.parametrize("k,n", [(0, 10), (5, 10), (81, 100), (3, 7), (199, 200)])
def test_wilson_matches_quadratic_roots(k, n):
    assert wilson_interval(k, n, z=Z95) == pytest.approx(_wilson_by_roots(k, n, Z95), abs=1e-9)


@pytest.mark.parametrize("k,n,expected", [
    # statsmodels.stats.proportion.proportion_confint(k, n, alpha=0.05, method="wilson"), 4 decimals
    (0, 10, (0.0, 0.2775)),
    (5, 10, (0.2366, 0.7634)),
    (81, 100, (0.7222, 0.8749)),
])
def test_wilson_published_values(k, n, expected):
    assert wilson_interval(k, n, z=Z95) == pytest.approx(expected, abs=5e-5)
    assert wilson_interval(k, n) == pytest.approx(expected, abs=2e-4)  # default z = 1.96


def test_wilson_edge_cases():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    lo, hi = wilson_interval(10, 10)
    assert hi == 1.0 and 0.6 < lo < 0.75
    with pytest.raises(ValueError, match="successes=11"):
        wilson_interval(11, 10)


def test_win_rate_counts_ties_as_half():
    assert win_rate([1, 1, 0.5, 0]) == pytest.approx(2.5 / 4)
    assert win_rate([0.5] * 7) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="outside"):
        win_rate([1, 2])
    with pytest.raises(ValueError, match="non-empty"):
        win_rate([])


def test_bootstrap_contains_mean_and_narrows_with_n():
    rng = np.random.default_rng(7)
    small = rng.choice([0.0, 0.5, 1.0], p=[0.3, 0.1, 0.6], size=40)
    large = rng.choice([0.0, 0.5, 1.0], p=[0.3, 0.1, 0.6], size=4000)
    widths = []
    for x in (small, large):
        lo, hi = paired_bootstrap_ci(x, n_boot=1000, seed=3)
        assert lo < x.mean() < hi
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 5  # width shrinks ~ 1/sqrt(n): 10x more data, ~1/10 the width
    assert widths[1] == pytest.approx(2 * 1.96 * large.std() / np.sqrt(large.size), rel=0.15)


def test_bootstrap_is_seeded_and_degenerate_data_has_zero_width():
    x = np.random.default_rng(0).random(50)  # continuous values, so two seeds cannot tie by chance
    assert paired_bootstrap_ci(x, seed=5) == paired_bootstrap_ci(x, seed=5)
    assert paired_bootstrap_ci(x, seed=5) != paired_bootstrap_ci(x, seed=6)
    assert paired_bootstrap_ci([1.0] * 20) == (1.0, 1.0)


VERDICT_TABLE = {  # (verdict on (A, B), verdict on (B, A)) -> outcome for A
    ("A", "B"): 1.0,
    ("B", "A"): 0.0,
}


@pytest.mark.parametrize("first,second", list(itertools.product(stats.VERDICTS, repeat=2)))
def test_judge_outcome_truth_table(first, second):
    assert judge_outcome(first, second) == VERDICT_TABLE.get((first, second), 0.5)


def test_judge_outcome_rejects_unknown_verdicts():
    with pytest.raises(ValueError, match="'a'"):
        judge_outcome("a", "B")


def _length_driven_set(n: int, seed: int, deterministic: bool):
    """A is usually longer, and only the length difference decides the winner (true intercept 0)."""
    rng = np.random.default_rng(seed)
    len_b = rng.integers(100, 300, n)
    len_a = np.round(len_b * np.exp(rng.normal(0.8, 0.5, n))).astype(int)
    x = np.log((len_a + 1) / (len_b + 1))
    if deterministic:
        outcomes = (len_a > len_b).astype(float)
    else:
        outcomes = (rng.random(n) < 1 / (1 + np.exp(-6 * x))).astype(float)
    return outcomes, len_a, len_b


@pytest.mark.parametrize("deterministic", [False, True])
def test_length_control_removes_pure_length_effect(deterministic):
    outcomes, len_a, len_b = _length_driven_set(2000, seed=1, deterministic=deterministic)
    assert win_rate(outcomes) > 0.9
    assert length_controlled_win_rate(outcomes, len_a, len_b) == pytest.approx(0.5, abs=0.06)


def test_length_control_keeps_quality_effect_unrelated_to_length():
    rng = np.random.default_rng(2)
    _, len_a, len_b = _length_driven_set(2000, seed=2, deterministic=True)
    outcomes = (rng.random(2000) < 0.8).astype(float)  # A is better 80% of the time, whatever the length
    assert length_controlled_win_rate(outcomes, len_a, len_b) == pytest.approx(win_rate(outcomes), abs=0.04)


def test_length_control_equals_raw_without_length_difference():
    outcomes = [1, 1, 0.5, 0, 1]
    assert length_controlled_win_rate(outcomes, [50] * 5, [50] * 5) == pytest.approx(win_rate(outcomes), abs=1e-6)
    with pytest.raises(ValueError, match="same length"):
        length_controlled_win_rate(outcomes, [1, 2], [1, 2])


def test_doctests():
    assert doctest.testmod(stats).failed == 0
