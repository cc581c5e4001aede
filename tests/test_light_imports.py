"""The CLI starts light: importing it (or a package `__init__`, or `show`) loads none of torch, transformers and
FastAPI, which the verbs import inside their functions; `sftpipe --help` answers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = "print(sorted(m for m in ('torch','transformers','fastapi') if m in sys.modules))"


def heavy_after(module: str) -> str:
    out = subprocess.run([sys.executable, "-c", f"import sys, {module}; {HEAVY}"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip()


@pytest.mark.parametrize("module", ["sftpipe.cli", "sftpipe.config", "sftpipe.serve", "sftpipe.generate",
                                    "sftpipe.doctor", "sftpipe.curate.pipeline", "sftpipe.stages.show"])
def test_importing_loads_no_heavy_library(module):
    assert heavy_after(module) == "[]"


def test_the_check_sees_a_heavy_import():
    assert heavy_after("sftpipe.render") == "['transformers']"


def test_help_exits_0():
    script = Path(sys.executable).with_name("sftpipe")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "sftpipe.cli"]
    out = subprocess.run([*cmd, "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "Usage" in out.stdout and "doctor" in out.stdout, out.stderr[-2000:]
