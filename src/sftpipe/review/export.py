"""Exports of a session: DPO preference pairs (TRL prompt/chosen/rejected with provenance, as `sftpipe dpo`
reads them) and rubric scores in the format `sftpipe eval` imports (`eval.human`: one JSONL row per
(prompt_id, checkpoint) with tone, policy and correctness; `checkpoint` is the run's name, which eval maps to the
run's final weights)."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter, defaultdict
from pathlib import Path

from ..io import write_jsonl
from .stats import _first_answers
from .store import answers, meta

HUMAN_FIELDS = ("tone", "policy", "correctness")  # the columns `sftpipe eval` requires (evaluate.score.load_human)


def _runs(con: sqlite3.Connection) -> list[dict]:
    return [dict(r) for r in con.execute("SELECT * FROM runs ORDER BY idx")]


def winner_of(votes: list[str], *, agree: bool) -> str | None:
    """The run an item's verdicts prefer: the majority of decisive votes ('0' / '1'); with `agree`, only when at
    least two reviewers answered and every one of them gave that same decisive verdict.

    >>> votes = ["0", "0", "tie"]
    >>> winner_of(votes, agree=False), winner_of(votes, agree=True), winner_of(["1"], agree=True)
    ('0', None, None)
    """
    if agree:
        return votes[0] if len(votes) >= 2 and len(set(votes)) == 1 and votes[0] in ("0", "1") else None
    count = Counter(v for v in votes if v in ("0", "1"))
    if not count or count["0"] == count["1"]:
        return None
    return "0" if count["0"] > count["1"] else "1"


def pairs(con: sqlite3.Connection, *, agree: bool = False) -> list[dict]:
    """One pair per item with a preferred run (see `winner_of`), in TRL's explicit-prompt format; items whose
    replies are identical or empty are left out."""
    runs, session = _runs(con), meta(con, "session")
    votes: dict[int, list[str]] = defaultdict(list)
    for (_, item), r in sorted(_first_answers(answers(con)).items()):
        votes[item].append(r["winner"])
    out = []
    for item_id in sorted(votes):
        win = winner_of(votes[item_id], agree=agree)
        if win is None:
            continue
        it = con.execute("SELECT * FROM items WHERE id = ?", (item_id,)).fetchone()
        if it["reply0"] == it["reply1"] or not it["reply0"].strip() or not it["reply1"].strip():
            continue  # a pair `sftpipe dpo` refuses (identical or empty replies) teaches nothing
        w, lose = int(win), 1 - int(win)
        out.append({"prompt": json.loads(it["prompt"]),
                    "chosen": [{"role": "assistant", "content": it[f"reply{w}"]}],
                    "rejected": [{"role": "assistant", "content": it[f"reply{lose}"]}],
                    "source": "sftpipe review", "session": session, "item": item_id, "set": it["set_name"],
                    "prompt_id": it["prompt_id"], "category": it["category"],
                    "chosen_run": runs[w]["name"], "chosen_checkpoint": runs[w]["checkpoint"],
                    "rejected_run": runs[lose]["name"], "rejected_checkpoint": runs[lose]["checkpoint"],
                    "votes": dict(Counter(votes[item_id])), "agreed": len(set(votes[item_id])) == 1})
    return out


def rubric_rows(con: sqlite3.Connection) -> list[dict]:
    """Mean rubric score per (prompt, run) over reviewers' first answers; a field nobody scored is null. Fields
    beyond tone/policy/correctness are kept as extra columns (eval ignores them)."""
    runs, fields = _runs(con), list(meta(con, "rubric") or [])
    per: dict[tuple[str, str, int], dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for r in _first_answers(answers(con)).values():
        for run, scores in r["run_scores"].items():
            cell = per[r["set_name"], r["prompt_id"], run]
            for f in fields:
                if isinstance(scores.get(f), int):
                    cell[f].append(scores[f])
    out = []
    for (set_name, prompt_id, run), scores in sorted(per.items()):
        if not scores:
            continue
        row = {"prompt_id": prompt_id, "checkpoint": runs[run]["name"], "set": set_name,
               "run_checkpoint": runs[run]["checkpoint"], "raters": max(len(v) for v in scores.values())}
        for f in dict.fromkeys([*HUMAN_FIELDS, *fields]):
            row[f] = round(sum(scores[f]) / len(scores[f]), 4) if scores.get(f) else None
        out.append(row)
    return out


def write_pairs(con: sqlite3.Connection, path: Path, *, agree: bool = False) -> int:
    rows = pairs(con, agree=agree)
    write_jsonl(path, rows)
    return len(rows)


def write_rubric(con: sqlite3.Connection, path: Path) -> int:
    rows = rubric_rows(con)
    write_jsonl(path, rows)
    return len(rows)
