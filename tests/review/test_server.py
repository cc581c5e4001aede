"""kill -9 of the review server mid-session loses no answer it acknowledged."""

from __future__ import annotations

import re
import signal
import sqlite3

from sftpipe.review import store

from .server import Http, free_port, start, stop


def test_kill_9_mid_session_loses_no_committed_answer(session):
    with store.connect(session) as con:
        token = store.add_reviewer(con, "erin")
    port = free_port()
    proc = start(session, port)
    acknowledged = []
    try:
        http = Http(port)
        assert http.request("GET", f"/login?token={token}")[0] == 303
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', http.request("GET", "/item/0")[2]).group(1)
        for pos, verdict in enumerate(["A", "B", "tie", "both_bad", "A"]):
            status, _, _ = http.request("POST", f"/item/{pos}", {"verdict": verdict, "A_tone": "3", "csrf": csrf})
            assert status == 303
            acknowledged.append((pos, verdict))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        stop(proc)
    con = sqlite3.connect(session)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    got = con.execute("SELECT i.pos, a.verdict FROM answers a JOIN items i ON i.id = a.item_id "
                      "WHERE a.state = 'active' ORDER BY a.id").fetchall()
    con.close()
    assert got == acknowledged
    proc = start(session, port)  # a new server carries on where the reviewer stopped
    try:
        http = Http(port)
        http.request("GET", f"/login?token={token}")
        assert http.request("GET", "/")[1]["location"] == "/item/5"
    finally:
        stop(proc)
