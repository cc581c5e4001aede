"""The review page in a real browser (Playwright driving Debian's chromium): mouse and keyboard answers, undo,
reload, the database holds exactly those answers; a reply with <script> is shown as text and runs nothing; a
screenshot that is not blank. One server and one browser for the module."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from sftpipe.config import SftpipeConfig
from sftpipe.stages import review

from .conftest import CATEGORIES, RUN_A, RUN_B, XSS, make_run
from .server import ROOT, free_port, start, stop

CHROMIUM = "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    print(f"skipping the browser tests: no chromium at {CHROMIUM} (scripts/test.sh installs it)")
    pytest.skip(f"no chromium binary at {CHROMIUM}", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser")
    runs = tmp / "runs"
    make_run(runs, RUN_A, [f"First model, reply {i}." if i else XSS for i in range(len(CATEGORIES))])
    make_run(runs, RUN_B, [f"Second model answers {i}." for i in range(len(CATEGORIES))])
    cfg = SftpipeConfig.model_validate({"train": {"output_dir": str(runs)}})
    session = review.init(cfg, RUN_A, RUN_B, out=tmp / "s.sqlite").session
    port = free_port()
    link = subprocess.run([sys.executable, "-m", "sftpipe.cli", "review", "add-reviewer", str(session), "dana",
                           "--port", str(port)], env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
                          capture_output=True, text=True, check=True).stdout.strip()
    assert link.startswith(f"http://127.0.0.1:{port}/login?token=")
    proc = start(session, port)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield session, link, browser, tmp
        finally:
            browser.close()
            stop(proc)


def active(session) -> list[tuple[int, str]]:
    con = sqlite3.connect(session)
    try:
        return con.execute("SELECT i.pos, a.verdict FROM answers a JOIN items i ON i.id = a.item_id "
                           "WHERE a.state = 'active' ORDER BY i.pos").fetchall()
    finally:
        con.close()


def test_mouse_and_keyboard_answers_undo_reload(served):
    session, link, browser, tmp = served
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(link)
    assert page.url.endswith("/item/0")
    assert "0 answered" in page.inner_text("#progress")
    page.check('input[name="A_tone"][value="4"]')  # mouse: a score, then the verdict button
    page.check('input[name="B_correctness"][value="2"]')
    page.fill("#comment", "clear and short")
    page.click("text=A is better")
    page.wait_for_url("**/item/1")
    page.keyboard.press("2")  # keyboard: B is better
    page.wait_for_url("**/item/2")
    page.keyboard.press("3")  # tie
    page.wait_for_url("**/item/3")
    page.keyboard.press("4")  # both bad
    page.wait_for_url("**/item/4")
    page.keyboard.press("s")  # skip
    page.wait_for_url("**/item/5")
    page.keyboard.press("k")  # previous item
    page.wait_for_url("**/item/4")
    page.keyboard.press("j")  # next item
    page.wait_for_url("**/item/5")
    page.keyboard.press("u")  # undo the skip of item 4
    page.wait_for_url("**/item/4")
    page.reload()
    assert page.url.endswith("/item/4") and "4 answered" in page.inner_text("#progress")
    assert active(session) == [(0, "A"), (1, "B"), (2, "tie"), (3, "both_bad")]
    con = sqlite3.connect(session)
    scores, comment = con.execute("SELECT scores, comment FROM answers WHERE verdict = 'A'").fetchone()
    con.close()
    assert json.loads(scores) == {"A": {"tone": 4}, "B": {"correctness": 2}} and comment == "clear and short"
    page.goto(link.split("/login")[0] + "/item/0")  # the earlier answer is shown back to its reviewer
    assert page.is_checked('input[name="A_tone"][value="4"]') and page.input_value("#comment") == "clear and short"
    page.close()


def test_a_script_in_a_reply_is_text_and_runs_nothing(served):
    session, link, browser, tmp = served
    con = sqlite3.connect(session)
    pos = con.execute("SELECT pos FROM items WHERE reply0 LIKE '%<script>%' ORDER BY pos").fetchone()[0]
    con.close()
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(link)
    page.goto(link.split("/login")[0] + f"/item/{pos}")
    shown = page.inner_text(".pair")
    assert "<script>window.__xss = 1</script>" in shown and "**bold** <b>b</b>" in shown
    assert page.evaluate("typeof window.__xss") == "undefined"
    assert page.locator(".pair script, .pair img, .pair b").count() == 0
    shot = tmp / "review.png"
    page.screenshot(path=str(shot), full_page=True)
    from PIL import Image

    img = Image.open(shot).convert("L")
    lo, hi = img.getextrema()
    shades = sum(1 for c in img.histogram() if c)
    assert img.size[0] >= 1000 and hi - lo > 100 and shades > 20, f"the screenshot looks blank ({shades} shades)"
    assert not errors
    page.close()
