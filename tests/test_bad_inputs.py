"""The bad-input corpus (tests/assets/bad/, expected.yaml) through the real CLI: one line on stderr naming the
file and line with a fix, exit 1 or 2, no traceback, nothing written. Also the same records with --on-error skip
(rejected with their reason, the good records kept) and generated big inputs (10 MB line, 1M records)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sftpipe import cli
from sftpipe.conversation import Conversation
from sftpipe.errors import RecordError
from sftpipe.readers import iter_records, read_conversations

BAD = Path(__file__).parent / "assets" / "bad"
CASES = yaml.safe_load((BAD / "expected.yaml").read_text())
GOOD = {"messages": [{"role": "user", "content": "Where is my parcel?"},
                     {"role": "assistant", "content": "It ships tomorrow."}]}


def sftpipe(capsys, monkeypatch, *args) -> tuple[int, str]:
    """Run `sftpipe ARGS` in-process with the entry point's error handling; (exit code, stderr)."""
    monkeypatch.setattr(sys, "argv", ["sftpipe", *map(str, args)])
    monkeypatch.delenv("SFTPIPE_DEBUG", raising=False)
    capsys.readouterr()
    try:
        cli.main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    return code, capsys.readouterr().err


def test_the_corpus_is_big_enough_and_each_file_listed():
    files = {c["file"] for c in CASES}
    assert len(files) >= 40 and len(files) == len(CASES)
    on_disk = {p.name for p in BAD.iterdir() if p.name not in ("expected.yaml", "make_corpus.py")}
    assert files == on_disk


@pytest.mark.parametrize("case", CASES, ids=[c["file"] for c in CASES])
def test_each_bad_file_fails_with_one_clear_line(case, tmp_path, capsys, monkeypatch):
    out = tmp_path / "rendered.jsonl"
    code, err = sftpipe(capsys, monkeypatch, case["verb"], "-i", BAD / case["file"], "-o", out,
                        "--model", "smollm2-135m-instruct")
    assert code == case["exit"], err
    assert "Traceback" not in err and err.startswith("error: "), err
    # One line names the file and the fix (config errors with several problems put a header line above them).
    [line] = [x for x in err.splitlines() if str(BAD / case["file"]) in x]
    assert len(err.strip().splitlines()) <= 2 and "fix:" in line.lower(), err
    for part in case["expect"]:
        assert part in line, (part, err)
    assert not out.exists() and not list(tmp_path.iterdir())


SKIPPABLE = [c for c in CASES if c["exit"] == 1 and c["file"].endswith(".jsonl")]


@pytest.mark.parametrize("case", SKIPPABLE, ids=[c["file"] for c in SKIPPABLE])
def test_on_error_skip_rejects_the_bad_record_with_its_reason(case):
    result = read_conversations(BAD / case["file"], on_error="skip")
    assert result.n_in == 2 and len(result.conversations) == 1 and len(result.rejects) == 1
    reject = result.rejects[0]
    assert reject["line"] == 2 and reject["reason"] and case["expect"][-1] in reject["error"]


def test_render_and_curate_skip_an_assistant_first_record(tmp_path, capsys, monkeypatch):
    src = BAD / "assistant_first.jsonl"
    code, err = sftpipe(capsys, monkeypatch, "render", "-i", src, "-o", tmp_path / "r.jsonl", "--on-error", "skip",
                        "--model", "smollm2-135m-instruct")
    assert code == 0, err
    assert len((tmp_path / "r.jsonl").read_text().splitlines()) == 1
    rejects = [json.loads(x) for x in (tmp_path / "r.rejects.jsonl").read_text().splitlines()]
    assert [r["reason"] for r in rejects] == ["assistant_first"]
    code, err = sftpipe(capsys, monkeypatch, "curate", "-i", src, "-i", BAD / "deep_nesting.jsonl", "-i",
                        BAD / "duplicate_key.jsonl", "-o", tmp_path / "cur")
    assert code == 0, err
    rejected = [json.loads(x) for x in (tmp_path / "cur" / "rejected.jsonl").read_text().splitlines()]
    errors = sorted(r["details"]["error"] for r in rejected if r["stage"] == "read")
    assert errors == ["assistant_first", "duplicate_key", "too_deep"]


@pytest.mark.slow
def test_a_10_mb_line_and_a_million_records_are_read_without_trouble(tmp_path):
    big = tmp_path / "big.jsonl"
    huge = {"messages": [GOOD["messages"][0], {"role": "assistant", "content": "x" * 10_000_000}]}
    big.write_text(json.dumps(GOOD) + "\n" + json.dumps(huge) + "\n" + json.dumps({"messages": []}) + "\n")
    result = read_conversations(big, on_error="skip")
    assert len(result.conversations) == 2 and [r["reason"] for r in result.rejects] == ["no_messages"]
    many = tmp_path / "many.jsonl"
    good, bad = '{"prompt":"a","completion":"b"}\n', '{"a":1,"a":2}\n'
    many.write_text((good * 9 + bad) * 100_000)
    kept = rejected = 0
    for out in iter_records(many):  # streamed: a million records in constant memory
        kept += isinstance(out, Conversation)
        rejected += isinstance(out, RecordError) and out.reason == "duplicate_key"
    assert (kept, rejected) == (900_000, 100_000) and out.line == 1_000_000


@pytest.mark.parametrize("name", ["deep_nesting.jsonl", "lone_surrogate.jsonl"])
def test_through_a_real_process(name, tmp_path):
    out = subprocess.run([sys.executable, "-m", "sftpipe.cli", "render", "-i", BAD / name, "-o", tmp_path / "o.jsonl",
                          "--model", "smollm2-135m-instruct"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 1 and "Traceback" not in out.stderr and f"{name}:2" in out.stderr


@pytest.mark.parametrize(("body", "expect", "code"), [
    ("{{ messages.__class__.__mro__ }}", "unsafe access blocked by the sandbox", 1),
    ("{% set x = ''.__class__.__subclasses__() %}{{ x }}", "unsafe access blocked by the sandbox", 1),
    ("{{ nothing_here.attr }}", "undefined variable", 1),
])
def test_template_violations_name_the_template_file_and_line(body, expect, code, tmp_path, capsys, monkeypatch):
    template = tmp_path / "evil.jinja"
    template.write_text("{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}\n\n" + body + "\n")
    data = tmp_path / "good.jsonl"
    data.write_text(json.dumps(GOOD) + "\n")
    code_, err = sftpipe(capsys, monkeypatch, "render", "-i", data, "-o", tmp_path / "o.jsonl",
                         "--template", template, "--model", "smollm2-135m-instruct")
    assert code_ == code and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert f"template '{template}' line 4" in err and expect in err and "fix:" in err.lower(), err
    assert "role order" not in err and not (tmp_path / "o.jsonl").exists()


def test_curate_with_a_missing_tokenizer_is_one_error_not_a_reject_per_record(tmp_path, capsys, monkeypatch):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps(GOOD) + "\n" + json.dumps(GOOD) + "\n", encoding="utf-8")
    code, err = sftpipe(capsys, monkeypatch, "curate", "-i", src, "-o", tmp_path / "cur",
                        "--set", f"model.name={tmp_path / 'no-such-model'}")
    assert code in (1, 2) and "Traceback" not in err and "no-such-model" in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "cur").exists()
