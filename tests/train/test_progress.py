"""Training output when stderr is not a terminal (CI logs, `| tee`): one plain line per logging step, with
the elapsed time and the time left."""

from __future__ import annotations

import re
import subprocess
import sys

import yaml


def test_piped_training_prints_one_plain_line_per_logging_step(make_cfg, tmp_path):
    cfg = make_cfg("train.max_steps=4", "train.logging_steps=2")
    path = tmp_path / "sftpipe.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    out = subprocess.run([sys.executable, "-m", "sftpipe.cli", "train", "-c", str(path)], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = re.findall(r"^\[train\] step (\d+)/4  loss \d+\.\d{4}  lr \S+  \d+ tok/s  "
                       r"elapsed \d+:\d\d:\d\d, eta (?:\d+:\d\d:\d\d|-)$", out.stderr, re.M)
    assert [int(s) for s in lines] == [1, 2, 4]  # logging_first_step, then every 2 steps
    assert "\x1b[" not in out.stderr  # no terminal control codes in a log file
