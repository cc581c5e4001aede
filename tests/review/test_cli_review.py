"""The `sftpipe review` verbs through the CLI: init, add-reviewer, export, stats, and one-line errors."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from sftpipe.cli import app
from sftpipe.review import store

from .conftest import RUN_A, RUN_B


def test_review_verbs_end_to_end(runs, tmp_path):
    cli = CliRunner()
    out = tmp_path / "s.sqlite"
    r = cli.invoke(app, ["review", "init", "--from", str(runs / RUN_A), "--vs", str(runs / RUN_B), "--n", "5",
                         "--out", str(out), "--set", "review.repeats=1"])
    assert r.exit_code == 0, r.output
    assert "items" in r.output and store.count_items(store.connect(out)) == 6
    r = cli.invoke(app, ["review", "add-reviewer", str(out), "fay"])
    assert r.exit_code == 0 and r.output.startswith("http://127.0.0.1:8700/login?token=")
    con = store.connect(out)
    fay = store.reviewer_for(con, r.output.strip().split("token=")[1])
    assert fay is not None and fay.name == "fay"
    store.record(con, fay, store.item_at(con, 0)["id"], "A", {"A": {"tone": 5}, "B": {"tone": 1}}, "")
    con.close()
    r = cli.invoke(app, ["review", "stats", str(out), "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["answers"] == 1
    r = cli.invoke(app, ["review", "stats", str(out)])
    assert r.exit_code == 0 and "win rate" in r.output
    r = cli.invoke(app, ["review", "export", str(out), "--pairs", str(tmp_path / "p.jsonl"), "--rubric",
                         str(tmp_path / "h.jsonl")])
    assert r.exit_code == 0, r.output
    assert len((tmp_path / "p.jsonl").read_text().splitlines()) == 1
    assert len((tmp_path / "h.jsonl").read_text().splitlines()) == 2
    for verb in ("init", "serve", "add-reviewer", "export", "stats"):
        assert cli.invoke(app, ["review", verb, "--help"]).exit_code == 0


def test_user_errors_are_one_line(runs, tmp_path, capsys, monkeypatch):
    import sys

    from sftpipe import cli

    monkeypatch.setattr(sys, "argv", ["sftpipe", "review", "stats", str(tmp_path / "missing.sqlite")])
    try:
        cli.main()
    except SystemExit as e:
        assert e.code != 0
    err = capsys.readouterr().err
    assert err.startswith("error:") and "fix:" in err and "Traceback" not in err and len(err.splitlines()) == 1


def test_a_lost_link_is_replaced_and_the_old_one_stops_working(session):
    r = CliRunner().invoke(app, ["review", "add-reviewer", str(session), "gus"])
    old = r.output.strip().split("token=")[1]
    r = CliRunner().invoke(app, ["review", "add-reviewer", str(session), "gus", "--new-link"])
    assert r.exit_code == 0, r.output
    new = r.output.strip().split("token=")[1]
    con = store.connect(session)
    assert store.reviewer_for(con, old) is None and store.reviewer_for(con, new).name == "gus"
    r = CliRunner().invoke(app, ["review", "add-reviewer", str(session), "nobody", "--new-link"])
    assert "no reviewer 'nobody' in this session (it has: ['gus'])" in str(r.exception)


def test_serve_prints_a_banner_and_a_busy_port_is_one_line(session, tmp_path):
    import subprocess
    import sys

    from .server import free_port, start, stop

    port = free_port()
    proc = start(session, port)
    try:
        busy = subprocess.run([sys.executable, "-m", "sftpipe.cli", "review", "serve", str(session), "--port",
                               str(port)], capture_output=True, text=True, timeout=60)
    finally:
        stop(proc)
    banner = proc.stdout.read().decode()
    assert f"session {session}: 12 items" in banner and f"http://127.0.0.1:{port}/login?token=" in banner
    assert busy.returncode == 2 and "Traceback" not in busy.stderr, busy.stderr
    assert busy.stderr.startswith(f"error: --port: 127.0.0.1:{port} cannot be used") and "fix:" in busy.stderr
