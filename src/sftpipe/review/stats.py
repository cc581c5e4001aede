"""Session statistics: win rate of the --from run with a bootstrap CI, per-rubric means per run, inter-reviewer
agreement on verdicts (Cohen's kappa for two reviewers, Krippendorff's alpha, nominal, for any number), and each
reviewer's consistency on the swapped repeats.

Per item, a reviewer's outcome for run 0 is 1 (run 0 better), 0 (run 1 better) or 0.5 (tie or both bad); the
item's outcome is the mean over its reviewers (first answers; repeats count only for consistency).
"""

from __future__ import annotations

import sqlite3
from collections import Counter, defaultdict
from collections.abc import Hashable, Sequence

from ..stats import paired_bootstrap_ci, wilson_interval
from .store import answers, meta

OUTCOME = {"0": 1.0, "1": 0.0, "tie": 0.5, "both_bad": 0.5}


def cohen_kappa(a: Sequence[Hashable], b: Sequence[Hashable]) -> float | None:
    """Cohen's kappa of two raters over the same units; None when chance agreement is 1 (one label only).

    >>> cohen_kappa(["y"] * 20 + ["y"] * 5 + ["n"] * 10 + ["n"] * 15, ["y"] * 20 + ["n"] * 5 + ["y"] * 10 + ["n"] * 15)
    0.4
    """
    if len(a) != len(b) or not a:
        raise ValueError(f"cohen_kappa needs two equally long, non-empty label lists, got {len(a)} and {len(b)}")
    n = len(a)
    po = sum(x == y for x, y in zip(a, b)) / n
    ca, cb = Counter(a), Counter(b)
    pe = sum(ca[k] * cb[k] for k in ca) / (n * n)
    return None if pe == 1 else round((po - pe) / (1 - pe), 4)


def krippendorff_alpha(units: Sequence[Sequence[Hashable]]) -> float | None:
    """Krippendorff's alpha for nominal labels; each unit lists the labels its raters gave (units with fewer
    than two are not pairable and ignored). None when there is no disagreement to expect (one label only).

    >>> krippendorff_alpha([["a", "a"], ["b", "b"], ["a", "b"]])
    0.4444
    """
    coincidence: dict[tuple, float] = defaultdict(float)
    for values in units:
        m = len(values)
        if m < 2:
            continue
        for i, c in enumerate(values):
            for j, k in enumerate(values):
                if i != j:
                    coincidence[c, k] += 1 / (m - 1)
    totals: dict[Hashable, float] = defaultdict(float)
    for (c, _), v in coincidence.items():
        totals[c] += v
    n = sum(totals.values())
    observed = sum(v for (c, k), v in coincidence.items() if c != k)
    expected = sum(totals[c] * totals[k] for c in totals for k in totals if c != k)
    if n <= 1 or expected == 0:
        return None
    return round(1 - (n - 1) * observed / expected, 4)


def _first_answers(rows: list[dict]) -> dict[tuple[str, int], dict]:
    """(reviewer, item) -> the reviewer's answer to the item's first showing (skips left out)."""
    return {(r["reviewer"], r["item_id"]): r for r in rows if r["verdict"] != "skip" and r["repeat_of"] is None}


def agreement(rows: list[dict]) -> dict:
    """Verdict agreement (winner by run) between reviewers on the items several of them answered."""
    first = _first_answers(rows)
    by_item: dict[int, dict[str, str]] = defaultdict(dict)
    for (who, item), r in first.items():
        by_item[item][who] = r["winner"]
    reviewers = sorted({who for who, _ in first})
    out: dict = {"reviewers": len(reviewers),
                 "alpha": krippendorff_alpha([list(v.values()) for v in by_item.values()])}
    if len(reviewers) == 2:
        both = [v for v in by_item.values() if len(v) == 2]
        out["kappa"] = cohen_kappa([v[reviewers[0]] for v in both], [v[reviewers[1]] for v in both]) if both \
            else None
        out["kappa_items"] = len(both)
    return out


def consistency(rows: list[dict]) -> dict[str, dict]:
    """Per reviewer: of the swapped repeats answered, how many got the same winner (by run) as the first showing."""
    first = _first_answers(rows)
    out: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for r in rows:
        orig = first.get((r["reviewer"], r["repeat_of"])) if r["repeat_of"] is not None else None
        if orig is not None and r["verdict"] != "skip":
            out[r["reviewer"]][0] += r["winner"] == orig["winner"]
            out[r["reviewer"]][1] += 1
    return {who: {"same": k, "n": n, "rate": round(k / n, 4)} for who, (k, n) in sorted(out.items())}


def rubric_means(rows: list[dict], fields: list[str]) -> dict[int, dict[str, dict]]:
    """Run -> field -> mean score: per prompt over reviewers, then over prompts (as `sftpipe eval` imports it)."""
    per: dict[tuple[int, int, str], list[int]] = defaultdict(list)
    for r in _first_answers(rows).values():
        for run, scores in r["run_scores"].items():
            for f in fields:
                if isinstance(scores.get(f), int):
                    per[run, r["item_id"], f].append(scores[f])
    means: dict[int, dict[str, list[float]]] = {0: defaultdict(list), 1: defaultdict(list)}
    for (run, _, f), v in per.items():
        means[run][f].append(sum(v) / len(v))
    return {run: {f: {"mean": round(sum(v) / len(v), 3), "n": len(v)} for f, v in sorted(d.items())}
            for run, d in means.items()}


def summarize(con: sqlite3.Connection, *, n_boot: int = 2000, seed: int = 0) -> dict:
    """Everything `sftpipe review stats` prints."""
    rows = answers(con)
    runs = [r["name"] for r in con.execute("SELECT name FROM runs ORDER BY idx")]
    first = _first_answers(rows)
    per_item: dict[int, list[float]] = defaultdict(list)
    for r in first.values():
        per_item[r["item_id"]].append(OUTCOME[r["winner"]])
    outcomes = [sum(v) / len(v) for v in per_item.values()]
    verdicts = Counter(r["winner"] for r in first.values())
    decisive = verdicts["0"] + verdicts["1"]
    out: dict = {"runs": runs, "items": con.execute("SELECT COUNT(*) FROM items").fetchone()[0],
                 "answers": len(first), "items_answered": len(per_item),
                 "skips": sum(r["verdict"] == "skip" for r in rows),
                 "verdicts": {runs[0]: verdicts["0"], runs[1]: verdicts["1"], "tie": verdicts["tie"],
                              "both_bad": verdicts["both_bad"]}}
    if outcomes:
        lo, hi = paired_bootstrap_ci(outcomes, n_boot=n_boot, seed=seed)
        out["win_rate"] = {"run": runs[0], "rate": round(sum(outcomes) / len(outcomes), 4),
                           "ci95": [round(lo, 4), round(hi, 4)], "items": len(outcomes)}
    if decisive:
        lo, hi = wilson_interval(verdicts["0"], decisive)
        out["decisive_share"] = {"run": runs[0], "rate": round(verdicts["0"] / decisive, 4),
                                 "ci95": [round(lo, 4), round(hi, 4)], "n": decisive}
    fields = list(meta(con, "rubric") or [])
    out["rubric"] = {runs[k]: v for k, v in rubric_means(rows, fields).items()}
    out["agreement"] = agreement(rows)
    out["consistency"] = consistency(rows)
    return out
