"""The review page (FastAPI, Jinja2, server-rendered; a little plain JS for keyboard shortcuts).

A reviewer opens `/login?token=...` once; the token goes into an HttpOnly, SameSite=Strict cookie. Without a valid
token every page is a login message. Forms carry a CSRF token bound to the reviewer. Replies are text: Jinja2
autoescapes them into `<pre>` blocks, and the Content-Security-Policy allows only the page's own script (nonce).
Run names, checkpoints, sets and other reviewers' answers are never rendered.
"""

from __future__ import annotations

import hmac
import json
import secrets
import threading
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from ..config import ReviewConfig
from . import store

COOKIE = "sftpipe_review"
TEMPLATES = Path(__file__).with_name("templates")
LABELS = {"A": "A is better", "B": "B is better", "tie": "Tie", "both_bad": "Both bad"}


def create_app(session: str | Path, cfg: ReviewConfig | None = None) -> FastAPI:
    """The review app for one session file."""
    cfg = cfg or ReviewConfig()
    path = Path(session)
    store.connect(path).close()  # fail now, in one line, if it is not a session
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(default=True))
    slots = threading.BoundedSemaphore(cfg.max_concurrent)
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    local = threading.local()

    def db():
        if getattr(local, "con", None) is None:
            local.con = store.connect(path)
        return local.con

    @app.middleware("http")
    async def guard(request: Request, call_next):
        if int(request.headers.get("content-length") or 0) > cfg.max_body_bytes:
            return HTMLResponse("request too large", status_code=413)
        if not slots.acquire(blocking=False):
            return HTMLResponse("too many requests; try again in a moment", status_code=429,
                                headers={"Retry-After": "1"})
        try:
            response = await call_next(request)
        finally:
            slots.release()
        response.headers.setdefault("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; "
                                    "img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = "no-store"
        return response

    def page(name: str, status: int = 200, **ctx) -> HTMLResponse:
        nonce = secrets.token_urlsafe(16)
        html = env.get_template(name).render(nonce=nonce, labels=LABELS, **ctx)
        return HTMLResponse(html, status_code=status, headers={
            "Content-Security-Policy": f"default-src 'none'; style-src 'unsafe-inline'; script-src 'nonce-{nonce}';"
                                       " form-action 'self'; frame-ancestors 'none'; base-uri 'none'"})

    def who(request: Request) -> store.Reviewer | None:
        return store.reviewer_for(db(), request.cookies.get(COOKIE))

    def login_page() -> HTMLResponse:
        return page("login.html", status=401)

    def csrf_ok(reviewer: store.Reviewer, form) -> bool:
        return hmac.compare_digest(str(form.get("csrf", "")), store.csrf_token(db(), reviewer))

    def go(pos: int | None) -> RedirectResponse:
        return RedirectResponse("/" if pos is None else f"/item/{pos}", status_code=303)

    @app.get("/login")
    def login(token: str = "") -> Response:
        if store.reviewer_for(db(), token) is None:
            return login_page()
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(COOKIE, token, httponly=True, samesite="strict", max_age=30 * 86400)
        return response

    @app.get("/")
    def home(request: Request) -> Response:
        reviewer = who(request)
        if reviewer is None:
            return login_page()
        pos = store.next_open(db(), reviewer)
        if pos is None:
            return page("done.html", reviewer=reviewer, progress=store.progress(db(), reviewer),
                        csrf=store.csrf_token(db(), reviewer))
        return go(pos)

    @app.get("/item/{pos}")
    def item(request: Request, pos: int) -> Response:
        reviewer = who(request)
        if reviewer is None:
            return login_page()
        row = store.item_at(db(), pos)
        if row is None:
            return page("message.html", status=404, message="No such item.")
        answer = store.active_answer(db(), reviewer, row["id"])
        total = store.count_items(db())
        messages = [{"role": str(m.get("role", "")), "content": _text(m.get("content"))}
                    for m in json.loads(row["prompt"]) if isinstance(m, dict)]
        left = row[f"reply{row['left_run']}"]
        right = row[f"reply{1 - row['left_run']}"]
        cut = [bool(row[f"cut{k}"]) if f"cut{k}" in row.keys() else False for k in (0, 1)]  # noqa: SIM118 (a Row)
        return page("item.html", reviewer=reviewer, pos=pos, total=total, messages=messages, reply_a=left,
                    reply_b=right, cut_a=cut[row["left_run"]], cut_b=cut[1 - row["left_run"]],
                    rubric=list(store.meta(db(), "rubric") or []), csrf=store.csrf_token(db(), reviewer),
                    progress=store.progress(db(), reviewer), answer=dict(answer) if answer else None,
                    scores=json.loads(answer["scores"]) if answer else {}, max_comment=cfg.max_comment_chars,
                    prev_pos=pos - 1 if pos > 0 else None, next_pos=pos + 1 if pos + 1 < total else None)

    @app.post("/item/{pos}")
    async def answer(request: Request, pos: int) -> Response:
        reviewer = who(request)
        if reviewer is None:
            return login_page()
        form = await request.form()
        if not csrf_ok(reviewer, form):
            return page("message.html", status=403, message="This form has expired; reload the page.")
        row = store.item_at(db(), pos)
        if row is None:
            return page("message.html", status=404, message="No such item.")
        verdict = "skip" if form.get("action") == "skip" else str(form.get("verdict", ""))
        if verdict not in (*store.VERDICTS, "skip"):
            return page("message.html", status=422, message="Choose a verdict (1-4) or skip.")
        comment = str(form.get("comment", ""))
        if len(comment) > cfg.max_comment_chars:
            return page("message.html", status=422, message=f"Comments are limited to {cfg.max_comment_chars} "
                                                            "characters.")
        scores: dict[str, dict[str, int]] = {"A": {}, "B": {}}
        for side in ("A", "B"):
            for field in store.meta(db(), "rubric") or []:
                value = str(form.get(f"{side}_{field}", ""))
                if value:
                    if value not in ("1", "2", "3", "4", "5"):
                        return page("message.html", status=422, message="Scores are 1 to 5.")
                    scores[side][field] = int(value)
        store.record(db(), reviewer, row["id"], verdict, scores if verdict != "skip" else {}, comment)
        return go(store.next_open(db(), reviewer, after=pos))

    @app.post("/undo")
    async def undo(request: Request) -> Response:
        reviewer = who(request)
        if reviewer is None:
            return login_page()
        if not csrf_ok(reviewer, await request.form()):
            return page("message.html", status=403, message="This form has expired; reload the page.")
        return go(store.undo(db(), reviewer))

    return app


def _text(content) -> str:
    """A message's content as plain text (text parts joined; other parts named)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p.get("text", f"[{p.get('type', 'part')}]") if isinstance(p, dict) else str(p)
                         for p in content)
    return "" if content is None else str(content)
