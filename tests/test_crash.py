"""kill -9 at seeded random points: after every kill the output is the previous complete state (its manifest
verifies) or absent/unmarked (readers refuse it), never a mix; re-running completes. Curate and render here;
train's kill-and-resume is tests/train/test_resume.py."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sftpipe.commit import manifest_ok, read_manifest
from sftpipe.curated import MARKER as CURATE_MARKER

SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "support_sample.jsonl"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def _start(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "sftpipe.cli", *map(str, args)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _timed(*args) -> float:
    start = time.monotonic()
    proc = _start(*args)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()[-2000:]
    return time.monotonic() - start


def _kill_at(delay: float, *args) -> bool:
    """Run, SIGKILL after `delay` s; True when the kill landed before the process finished."""
    proc = _start(*args)
    try:
        proc.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        return True


def _crash_loop(kills: int, seed: int, args: tuple, state) -> None:
    """Complete once (the previous state), then kill at random points; check the state after each; re-run."""
    duration = _timed(*args)
    before = state()
    assert before is not None
    rng, landed = random.Random(seed), 0
    for _ in range(kills):
        landed += _kill_at(rng.uniform(0.3 * duration, 1.1 * duration), *args)
        now = state()  # raises on a mix
        assert now in (None, before), "after a kill the output is neither the previous state nor absent"
    assert landed, "no kill landed while the stage was running"
    _timed(*args)
    assert state() == before  # re-running completes (same input, same output)


@pytest.mark.slow
def test_kill_9_curate_never_leaves_a_mix(tmp_path):
    out = tmp_path / "curated"

    def state():
        if not out.exists():
            return None
        assert manifest_ok(out, CURATE_MARKER, verify=True), sorted(p.name for p in out.iterdir())
        return sorted(read_manifest(out, CURATE_MARKER)["files"])  # contents verified above; timings differ

    _crash_loop(3, 12, ("curate", "-i", SAMPLE, "-o", out), state)


@pytest.mark.slow
def test_kill_9_render_never_leaves_a_mix(tmp_path):
    out = tmp_path / "rendered.jsonl"
    marker = "rendered.render.json"

    def state():
        if not (tmp_path / marker).exists():
            return None  # unmarked: readers refuse whatever files are there
        assert manifest_ok(tmp_path, marker, verify=True), sorted(p.name for p in tmp_path.iterdir())
        return sorted(read_manifest(tmp_path, marker)["files"])

    _crash_loop(2, 7, ("render", "-i", SAMPLE, "-o", out, "--model", "smollm2-135m-instruct"), state)
