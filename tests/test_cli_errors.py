"""User errors through the real CLI: one clear error naming the path and the fix, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "support_sample.jsonl"


def sftpipe(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "sftpipe.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


@pytest.mark.parametrize("verb", ["render", "train", "inspect"])
def test_a_missing_input_file_is_named_with_the_fix(tmp_path, verb):
    missing = tmp_path / "nope.jsonl"
    extra = ["-o", tmp_path / "o.jsonl"] if verb == "render" else []
    extra += ["--set", f"train.output_dir={tmp_path / 'runs'}"] if verb == "train" else []
    out = sftpipe(verb, "-i", missing, *extra)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"{missing}: file not found; fix:" in out.stderr


def test_an_empty_input_is_an_error_unless_asked_for(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    out = sftpipe("render", "-i", empty, "-o", tmp_path / "o.jsonl")
    assert out.returncode == 2 and "no records; fix:" in out.stderr and "data.allow_empty" in out.stderr
    assert not (tmp_path / "o.jsonl").exists()


def test_an_unwritable_output_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    out = sftpipe("render", "-i", SAMPLE, "-o", blocker / "o.jsonl")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and str(blocker) in out.stderr and "fix:" in out.stderr
