"""The review session: one SQLite file (WAL mode, schema version in `meta`) holding the two runs, the items and
every answer as a row. Each answer is committed before the next page is served, so killing the server loses none.

Positions on the page are `A` (left) and `B` (right); `items.left_run` records which run (0 = --from, 1 = --vs)
was drawn to the left. Answers keep what the reviewer saw (verdict A | B | tie | both_bad | skip, scores per
position); `to_runs` maps them to the runs. Undo and re-answering never delete: the old row's state changes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import SftpipeError

SCHEMA_VERSION = 2  # 2: items.cut0/cut1 (a reply stopped by max_new_tokens); 1 still reads


class ReviewError(SftpipeError):
    """A review input (session file, run, generations, option) is unusable: one line naming it and the fix."""

    def __init__(self, where: str, problems: list[str]):
        super().__init__(f"{where}: {'; '.join(problems)}")

VERDICTS = ("A", "B", "tie", "both_bad")
SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE runs (idx INTEGER PRIMARY KEY CHECK (idx IN (0, 1)), name TEXT NOT NULL, path TEXT NOT NULL,
                   checkpoint TEXT NOT NULL, base_model TEXT);
CREATE TABLE items (id INTEGER PRIMARY KEY, pos INTEGER NOT NULL UNIQUE, set_name TEXT NOT NULL,
                    prompt_id TEXT NOT NULL, category TEXT NOT NULL, prompt TEXT NOT NULL, reply0 TEXT NOT NULL,
                    reply1 TEXT NOT NULL, left_run INTEGER NOT NULL CHECK (left_run IN (0, 1)),
                    repeat_of INTEGER REFERENCES items(id), cut0 INTEGER NOT NULL DEFAULT 0,
                    cut1 INTEGER NOT NULL DEFAULT 0);
CREATE TABLE reviewers (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, token_sha256 TEXT NOT NULL UNIQUE,
                        created TEXT NOT NULL);
CREATE TABLE answers (id INTEGER PRIMARY KEY, reviewer_id INTEGER NOT NULL REFERENCES reviewers(id),
                      item_id INTEGER NOT NULL REFERENCES items(id),
                      verdict TEXT NOT NULL CHECK (verdict IN ('A', 'B', 'tie', 'both_bad', 'skip')),
                      scores TEXT NOT NULL, comment TEXT NOT NULL DEFAULT '', created TEXT NOT NULL,
                      state TEXT NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'undone', 'replaced')));
CREATE INDEX answers_by_reviewer ON answers (reviewer_id, state, item_id);
"""


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def connect(path: str | Path, *, create: bool = False) -> sqlite3.Connection:
    """Open a session file (WAL, synchronous=FULL, foreign keys); ReviewError if it is not one this code reads."""
    path = Path(path)
    if not create and not path.is_file():
        raise ReviewError(str(path), ["no such review session; fix: create it with `sftpipe review init --from RUN_A "
                                      "--vs RUN_B --out FILE.sqlite`"])
    con = sqlite3.connect(path, timeout=10, isolation_level=None, check_same_thread=False)
    con.row_factory = sqlite3.Row
    try:
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=FULL")
        con.execute("PRAGMA foreign_keys=ON")
        if not create:
            row = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if row is None or int(row[0]) > SCHEMA_VERSION:
                raise ReviewError(str(path), [f"schema version {row and row[0]} is not one this sftpipe reads "
                                              f"(<= {SCHEMA_VERSION}); fix: upgrade sftpipe"])
    except sqlite3.DatabaseError as e:
        con.close()
        raise ReviewError(str(path), [f"not a review session ({e}); fix: give the .sqlite file that "
                                      "`sftpipe review init` wrote"]) from None
    except ReviewError:
        con.close()
        raise
    return con


def create(path: Path, runs: list[dict], items: list[dict], meta: dict[str, Any]) -> Path:
    """Write a new session file as a whole (built beside it, renamed into place); refuses to replace one."""
    if path.exists():
        raise ReviewError(str(path), ["a review session already exists here; fix: choose another --out, or delete "
                                      "it if its answers are not needed"])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        with closing(connect(tmp, create=True)) as con:
            con.executescript(SCHEMA)
            con.execute("BEGIN")
            meta = {**meta, "schema_version": SCHEMA_VERSION, "secret": secrets.token_hex(32), "created": now()}
            con.executemany("INSERT INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in meta.items()])
            con.executemany("INSERT INTO runs VALUES (:idx, :name, :path, :checkpoint, :base_model)", runs)
            con.executemany("INSERT INTO items VALUES (:id, :pos, :set_name, :prompt_id, :category, :prompt, "
                            ":reply0, :reply1, :left_run, :repeat_of, :cut0, :cut1)",
                            [{"cut0": 0, "cut1": 0, **it, "prompt": json.dumps(it["prompt"], ensure_ascii=False)}
                             for it in items])
            con.execute("COMMIT")
        os.replace(tmp, path)
    finally:
        for p in (tmp, tmp.with_name(tmp.name + "-wal"), tmp.with_name(tmp.name + "-shm")):
            p.unlink(missing_ok=True)
    return path


def meta(con: sqlite3.Connection, key: str) -> Any:
    row = con.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else json.loads(row[0])


def _sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def add_reviewer(con: sqlite3.Connection, name: str) -> str:
    """Register a reviewer; returns the token (only its sha256 is stored)."""
    if not name or len(name) > 64 or not name.isprintable():
        raise ReviewError("add-reviewer", [f"{name!r} is not a reviewer name; fix: use 1-64 printable characters, "
                                           "e.g. alice"])
    token = secrets.token_urlsafe(24)
    try:
        con.execute("INSERT INTO reviewers (name, token_sha256, created) VALUES (?, ?, ?)", (name, _sha(token), now()))
    except sqlite3.IntegrityError:
        raise ReviewError("add-reviewer", [f"reviewer {name!r} already exists in this session; fix: choose "
                                           "another name"]) from None
    return token


def summary(con: sqlite3.Connection) -> tuple[int, list[str]]:
    """(items, not counting swapped repeats; reviewer names in the order they were added)."""
    items = con.execute("SELECT COUNT(*) FROM items WHERE repeat_of IS NULL").fetchone()[0]
    return items, [r[0] for r in con.execute("SELECT name FROM reviewers ORDER BY id")]


def new_token(con: sqlite3.Connection, name: str) -> str:
    """A new token for an existing reviewer (a lost link): the old link stops working; their answers stay."""
    token = secrets.token_urlsafe(24)
    if con.execute("UPDATE reviewers SET token_sha256 = ? WHERE name = ?", (_sha(token), name)).rowcount != 1:
        raise ReviewError("add-reviewer", [f"no reviewer {name!r} in this session (it has: "
                                           f"{summary(con)[1] or 'none'}); fix: "
                                           "leave out --new-link to add them"])
    return token


@dataclass(frozen=True)
class Reviewer:
    id: int
    name: str


def reviewer_for(con: sqlite3.Connection, token: str | None) -> Reviewer | None:
    """The reviewer a token belongs to, or None."""
    if not token or len(token) > 128:
        return None
    row = con.execute("SELECT id, name FROM reviewers WHERE token_sha256 = ?", (_sha(token),)).fetchone()
    return Reviewer(row["id"], row["name"]) if row else None


def csrf_token(con: sqlite3.Connection, reviewer: Reviewer) -> str:
    """A form token bound to the reviewer (HMAC of the session secret)."""
    return hmac.new(meta(con, "secret").encode(), f"csrf:{reviewer.id}".encode(), "sha256").hexdigest()


def count_items(con: sqlite3.Connection) -> int:
    return con.execute("SELECT COUNT(*) FROM items").fetchone()[0]


def item_at(con: sqlite3.Connection, pos: int) -> sqlite3.Row | None:
    return con.execute("SELECT * FROM items WHERE pos = ?", (pos,)).fetchone()


def active_answer(con: sqlite3.Connection, reviewer: Reviewer, item_id: int) -> sqlite3.Row | None:
    return con.execute("SELECT * FROM answers WHERE reviewer_id = ? AND item_id = ? AND state = 'active'",
                       (reviewer.id, item_id)).fetchone()


def next_open(con: sqlite3.Connection, reviewer: Reviewer, after: int = -1) -> int | None:
    """The first position after `after` (then from the start) this reviewer has not answered or skipped."""
    sql = ("SELECT pos FROM items WHERE pos > ? AND id NOT IN (SELECT item_id FROM answers WHERE reviewer_id = ? "
           "AND state = 'active') ORDER BY pos LIMIT 1")
    row = con.execute(sql, (after, reviewer.id)).fetchone() or con.execute(sql, (-1, reviewer.id)).fetchone()
    return None if row is None else row[0]


def progress(con: sqlite3.Connection, reviewer: Reviewer) -> dict[str, int]:
    rows = con.execute("SELECT verdict = 'skip', COUNT(*) FROM answers WHERE reviewer_id = ? AND state = 'active' "
                       "GROUP BY 1", (reviewer.id,)).fetchall()
    counts = {bool(r[0]): r[1] for r in rows}
    return {"answered": counts.get(False, 0), "skipped": counts.get(True, 0), "total": count_items(con)}


def record(con: sqlite3.Connection, reviewer: Reviewer, item_id: int, verdict: str,
           scores: dict[str, dict[str, int]], comment: str) -> int:
    """One answer (or skip) as a committed row; an earlier active answer to the same item becomes 'replaced'."""
    con.execute("BEGIN IMMEDIATE")
    try:
        con.execute("UPDATE answers SET state = 'replaced' WHERE reviewer_id = ? AND item_id = ? AND state = 'active'",
                    (reviewer.id, item_id))
        cur = con.execute("INSERT INTO answers (reviewer_id, item_id, verdict, scores, comment, created) "
                          "VALUES (?, ?, ?, ?, ?, ?)", (reviewer.id, item_id, verdict, json.dumps(scores), comment,
                                                        now()))
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return cur.lastrowid


def undo(con: sqlite3.Connection, reviewer: Reviewer) -> int | None:
    """Withdraw the reviewer's latest active answer; returns its item's position (None if nothing to undo)."""
    con.execute("BEGIN IMMEDIATE")
    row = con.execute("SELECT a.id, i.pos FROM answers a JOIN items i ON i.id = a.item_id WHERE a.reviewer_id = ? "
                      "AND a.state = 'active' ORDER BY a.id DESC LIMIT 1", (reviewer.id,)).fetchone()
    if row is not None:
        con.execute("UPDATE answers SET state = 'undone' WHERE id = ?", (row["id"],))
    con.execute("COMMIT")
    return None if row is None else row["pos"]


def to_runs(left_run: int, verdict: str, scores: dict[str, dict]) -> tuple[str, dict[int, dict]]:
    """A verdict and scores by position -> by run: winner '0' | '1' | 'tie' | 'both_bad' (or 'skip'), run -> scores.

    >>> to_runs(1, "A", {"A": {"tone": 5}, "B": {"tone": 2}})
    ('1', {1: {'tone': 5}, 0: {'tone': 2}})
    """
    right_run = 1 - left_run
    winner = {"A": str(left_run), "B": str(right_run)}.get(verdict, verdict)
    return winner, {left_run: scores.get("A", {}), right_run: scores.get("B", {})}


def answers(con: sqlite3.Connection) -> list[dict]:
    """Every active answer joined with its item and reviewer, mapped to runs (see `to_runs`)."""
    rows = con.execute("SELECT a.*, r.name AS reviewer, i.pos, i.set_name, i.prompt_id, i.category, i.left_run, "
                       "i.repeat_of FROM answers a JOIN items i ON i.id = a.item_id JOIN reviewers r "
                       "ON r.id = a.reviewer_id WHERE a.state = 'active' ORDER BY a.id").fetchall()
    out = []
    for r in rows:
        winner, scores = to_runs(r["left_run"], r["verdict"], json.loads(r["scores"]))
        out.append({**dict(r), "winner": winner, "run_scores": scores,
                    "original": r["repeat_of"] if r["repeat_of"] is not None else r["item_id"]})
    return out
