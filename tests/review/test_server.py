"""kill -9 of the review server mid-session loses no answer it acknowledged."""

from __future__ import annotations

import re
import signal
import sqlite3
import threading
import time

from sftpipe.review import store

from .server import Http, free_port, start, stop

VERDICTS = ["A", "B", "tie", "both_bad"]


def test_kill_9_mid_session_loses_no_committed_answer(session):
    with store.connect(session) as con:
        token = store.add_reviewer(con, "erin")
        total = store.count_items(con)
    port = free_port()
    proc = start(session, port)
    acknowledged: list[tuple[int, str]] = []

    def answer_all(http: Http, csrf: str) -> None:
        try:
            for pos in range(total):
                verdict = VERDICTS[pos % 4]
                status, _, _ = http.request("POST", f"/item/{pos}", {"verdict": verdict, "A_tone": "3",
                                                                     "csrf": csrf})
                assert status == 303
                acknowledged.append((pos, verdict))
        except OSError:
            pass  # the server died under this request

    try:
        http = Http(port)
        assert http.request("GET", f"/login?token={token}")[0] == 303
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', http.request("GET", "/item/0")[2]).group(1)
        worker = threading.Thread(target=answer_all, args=(http, csrf))
        worker.start()
        deadline = time.monotonic() + 30
        while len(acknowledged) < 3 and worker.is_alive() and time.monotonic() < deadline:
            time.sleep(0.001)
        proc.send_signal(signal.SIGKILL)  # while the reviewer is still answering
        proc.wait(10)
        worker.join(30)
    finally:
        stop(proc)
    assert len(acknowledged) >= 3
    print(f"killed after {len(acknowledged)} of {total} answers were acknowledged")
    con = sqlite3.connect(session)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    got = con.execute("SELECT i.pos, a.verdict FROM answers a JOIN items i ON i.id = a.item_id "
                      "WHERE a.state = 'active' ORDER BY a.id").fetchall()
    con.close()
    # every acknowledged answer is there; at most the one in flight was committed without its reply arriving
    assert got[:len(acknowledged)] == acknowledged and len(got) - len(acknowledged) in (0, 1)
    proc = start(session, port)  # a new server carries on where the reviewer stopped
    try:
        http = Http(port)
        http.request("GET", f"/login?token={token}")
        status, headers, text = http.request("GET", "/")
        if len(got) == total:
            assert status == 200 and "All done" in text
        else:
            assert headers["location"] == f"/item/{len(got)}"
    finally:
        stop(proc)
