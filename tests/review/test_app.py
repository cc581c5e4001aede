"""The review page in-process: auth, CSRF, blinding, escaping, answers/undo, limits."""

from __future__ import annotations

import json
import re
import sqlite3

import pytest
from fastapi.testclient import TestClient

from sftpipe.review import store
from sftpipe.review.app import COOKIE, create_app

from .conftest import RUN_A, RUN_B


def rows(session) -> list[dict]:
    with sqlite3.connect(session) as con:
        con.row_factory = sqlite3.Row
        return [dict(r) for r in con.execute("SELECT a.*, r.name FROM answers a JOIN reviewers r "
                                              "ON r.id = a.reviewer_id ORDER BY a.id")]


def client_for(session, name: str | None) -> tuple[TestClient, str | None]:
    client = TestClient(create_app(session), follow_redirects=False)
    if name is None:
        return client, None
    with store.connect(session) as con:
        token = store.add_reviewer(con, name)
    assert client.get(f"/login?token={token}").status_code == 303
    return client, token


def csrf(html: str) -> str:
    return re.search(r'name="csrf" value="([0-9a-f]+)"', html).group(1)


@pytest.fixture
def alice(session):
    return client_for(session, "alice")[0]


def test_without_a_valid_token_only_a_login_message(session, alice):
    anon = TestClient(create_app(session), follow_redirects=False)
    for path in ("/", "/item/0", "/item/1"):
        r = anon.get(path)
        assert r.status_code == 401 and "personal link" in r.text and "Reply" not in r.text
    assert anon.get("/login?token=not-a-token").status_code == 401
    anon.cookies.set(COOKIE, "wrong-token")
    assert anon.get("/item/0").status_code == 401
    assert anon.post("/item/0", data={"verdict": "A", "csrf": "x"}).status_code == 401
    assert anon.post("/undo", data={"csrf": "x"}).status_code == 401
    assert rows(session) == []
    assert alice.get("/").headers["location"] == "/item/0"


def test_forms_need_the_reviewers_own_csrf_token(session, alice):
    page = alice.get("/item/0").text
    assert alice.post("/item/0", data={"verdict": "A"}).status_code == 403
    assert alice.post("/item/0", data={"verdict": "A", "csrf": "0" * 64}).status_code == 403
    bob, _ = client_for(session, "bob")
    bob_csrf = csrf(bob.get("/item/0").text)
    assert bob_csrf != csrf(page)
    assert alice.post("/item/0", data={"verdict": "A", "csrf": bob_csrf}).status_code == 403
    assert alice.post("/undo", data={"csrf": bob_csrf}).status_code == 403
    assert rows(session) == []
    assert alice.post("/item/0", data={"verdict": "A", "csrf": csrf(page)}).status_code == 303
    assert len(rows(session)) == 1


def test_another_reviewer_can_neither_read_nor_change_answers(session, alice):
    token = csrf(alice.get("/item/0").text)
    alice.post("/item/0", data={"verdict": "B", "A_tone": "2", "B_tone": "5", "comment": "alice-secret-note",
                                "csrf": token})
    assert "alice-secret-note" in alice.get("/item/0").text
    bob, _ = client_for(session, "bob")
    page = bob.get("/item/0").text
    assert "alice-secret-note" not in page and "chosen" not in page.split('class="verdicts"')[1].split("</div>")[0]
    assert "checked" not in page
    assert bob.get("/").headers["location"] == "/item/0"  # alice's answer does not count as bob's
    assert bob.post("/undo", data={"csrf": csrf(page)}).headers["location"] == "/"  # nothing of bob's to undo
    bob.post("/item/0", data={"verdict": "A", "csrf": csrf(page)})
    got = {r["name"]: r for r in rows(session) if r["state"] == "active"}
    assert got["alice"]["verdict"] == "B" and got["alice"]["comment"] == "alice-secret-note"
    assert got["bob"]["verdict"] == "A"


def test_no_run_name_in_any_served_html(session, alice):
    pages = [alice.get("/login?token=bad").text, alice.get("/").text]
    total = store.count_items(store.connect(session))
    for pos in range(total):
        page = alice.get(f"/item/{pos}").text
        pages.append(page)
        alice.post(f"/item/{pos}", data={"verdict": "tie", "csrf": csrf(page)})
    pages.append(alice.get("/").text)  # the done page
    assert "All done" in pages[-1]
    html = "\n".join(pages)
    for secret in (RUN_A, RUN_B, "zanzibar", "quokka", "final", "tiny-base", "support"):
        assert secret not in html, secret


def test_replies_are_escaped_text(session, alice):
    with store.connect(session) as con:
        pos = con.execute("SELECT pos FROM items WHERE reply0 LIKE '%<script>%' AND repeat_of IS NULL").fetchone()[0]
    r = alice.get(f"/item/{pos}")
    assert "<script>window.__xss" not in r.text and "<img src=x" not in r.text
    assert "&lt;script&gt;window.__xss = 1&lt;/script&gt;" in r.text and "**bold** &lt;b&gt;b&lt;/b&gt;" in r.text
    nonce = re.search(r"script-src 'nonce-([^']+)'", r.headers["content-security-policy"]).group(1)
    assert r.text.count("<script") == 1 and f'<script nonce="{nonce}">' in r.text


def test_answers_undo_and_replacing_an_answer(session, alice):
    page = alice.get("/item/0").text
    r = alice.post("/item/0", data={"verdict": "A", "A_policy": "4", "B_policy": "1", "csrf": csrf(page)})
    assert r.headers["location"] == "/item/1"
    alice.post("/item/1", data={"action": "skip", "csrf": csrf(page)})
    alice.post("/item/2", data={"verdict": "both_bad", "csrf": csrf(page)})
    assert alice.post("/undo", data={"csrf": csrf(page)}).headers["location"] == "/item/2"
    assert alice.get("/").headers["location"] == "/item/2"
    alice.post("/item/0", data={"verdict": "B", "csrf": csrf(page)})  # changes item 0's answer
    got = [(r["verdict"], r["state"]) for r in rows(session)]
    assert got == [("A", "replaced"), ("skip", "active"), ("both_bad", "undone"), ("B", "active")]
    assert json.loads(rows(session)[0]["scores"]) == {"A": {"policy": 4}, "B": {"policy": 1}}
    assert "1 answered" in alice.get("/item/0").text and "1 skipped" in alice.get("/item/0").text


def test_bad_input_is_refused(session, alice):
    token = csrf(alice.get("/item/0").text)
    assert alice.post("/item/0", data={"verdict": "maybe", "csrf": token}).status_code == 422
    assert alice.post("/item/0", data={"verdict": "A", "A_tone": "9", "csrf": token}).status_code == 422
    assert alice.post("/item/0", data={"verdict": "A", "comment": "x" * 2001, "csrf": token}).status_code == 422
    assert alice.post("/item/0", data={"verdict": "A", "comment": "x" * 70000, "csrf": token}).status_code == 413
    assert alice.get("/item/999").status_code == 404
    assert rows(session) == []


def test_overload_gets_429(session, monkeypatch):
    import threading

    from sftpipe.config import ReviewConfig

    client = TestClient(create_app(session, ReviewConfig(max_concurrent=1)), follow_redirects=False)
    entered, release = threading.Event(), threading.Event()
    real = store.reviewer_for

    def slow(con, token):
        entered.set()
        release.wait(10)
        return real(con, token)

    monkeypatch.setattr(store, "reviewer_for", slow)
    first = threading.Thread(target=client.get, args=("/item/0",))
    first.start()
    try:
        assert entered.wait(10)
        r = client.get("/item/1")
        assert r.status_code == 429 and r.headers["retry-after"] == "1"
    finally:
        release.set()
        first.join(10)
    monkeypatch.setattr(store, "reviewer_for", real)
    assert client.get("/item/1").status_code == 401  # served again once the slot is free


def test_a_reply_cut_at_the_token_limit_says_so_on_its_side(tmp_path):
    from sftpipe.stages import review

    from .conftest import config, make_run

    root = tmp_path / "runs"
    make_run(root, "a", [f"Reply a{i}." for i in range(12)])
    b = make_run(root, "b", [f"Reply b{i}." for i in range(12)])
    gen = b / "eval" / "generations" / "final" / "support.jsonl"
    rows_b = [json.loads(x) for x in gen.read_text().splitlines()]
    rows_b[4]["finish"] = "length"  # eval's record of a reply stopped by max_new_tokens
    gen.write_text("".join(json.dumps(r) + "\n" for r in rows_b))
    session = review.init(config(root, n=12), "a", "b", out=tmp_path / "s.sqlite").session
    client, _ = client_for(session, "cara")
    with store.connect(session) as con:
        cut = con.execute("SELECT pos, left_run FROM items WHERE cut1 = 1").fetchall()
        assert con.execute("SELECT COUNT(*) FROM items WHERE cut0 = 1").fetchone()[0] == 0
    assert len(cut) == 1
    pos, left_run = cut[0]
    side = "A" if left_run == 1 else "B"  # run b is on the left when left_run is 1
    text = client.get(f"/item/{pos}").text
    assert f'id="cut-{side}"' in text and "reached the token limit" in text
    other = next(p for p in range(12) if p != pos)
    assert "reached the token limit" not in client.get(f"/item/{other}").text
