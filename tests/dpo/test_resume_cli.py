"""`sftpipe dpo` through the CLI: killed with SIGKILL after its first complete checkpoint, then `--resume`d, it
reaches the losses of an uninterrupted run; the CLI prints its table and refuses a bad config in one line."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml
from typer.testing import CliRunner

from sftpipe.cli import app, main
from sftpipe.runs import read_info, require_complete
from sftpipe.runs.checkpoints import latest_checkpoint
from sftpipe.stages.dpo import run

RESUME_TOLERANCE = 1e-5


def _losses(run_dir):
    return {m["step"]: m["loss"] for m in read_info(run_dir).metrics if "loss" in m}


def test_kill_9_then_resume_through_the_cli_reaches_the_uninterrupted_loss(make_dpo, tmp_path, ref_cache):
    common = ["dpo.max_steps=12", "dpo.save_steps=3", "dpo.batch_size=2"]
    reference = run(make_dpo(*common, name="whole"), progress=False)
    cfg = make_dpo(*common, name="killed")
    path = tmp_path / "killed.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SFTPIPE_CACHE": str(ref_cache.parent)}
    env.pop("HF_HUB_DISABLE_PROGRESS_BARS", None)
    proc = subprocess.Popen([sys.executable, "-m", "sftpipe.cli", "dpo", "-c", str(path)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpts = reference.run_dir.parent / "killed" / "checkpoints"
    deadline = time.time() + 180
    while proc.poll() is None and time.time() < deadline and latest_checkpoint(ckpts) is None:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, f"dpo ended before the kill: {err.decode()[-2000:]}"
    assert read_info(ckpts.parent).status == "running"

    out = CliRunner().invoke(app, ["dpo", "-c", str(path), "--resume"])
    assert out.exit_code == 0, out.output
    assert "reward margin" in out.output and "resumed from" in out.output
    info = require_complete(ckpts.parent)
    assert info.kind == "dpo" and info.resumed_from and int(info.resumed_from[0].split("-")[1]) < 12
    want, got = _losses(reference.run_dir), _losses(ckpts.parent)
    assert sorted(got) == list(range(1, 13))
    assert max(abs(want[s] - got[s]) for s in want) <= RESUME_TOLERANCE
    assert got[1] == pytest.approx(math.log(2), abs=1e-5)


def test_the_cli_refuses_a_config_without_a_reference_in_one_line(make_dpo, tmp_path, monkeypatch, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(make_dpo("dpo.reference=").model_dump(mode="json")))
    monkeypatch.setattr(sys, "argv", ["sftpipe", "dpo", "-c", str(path)])
    monkeypatch.delenv("SFTPIPE_DEBUG", raising=False)
    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err
    assert e.value.code == 2 and "reference: missing" in err and "fix: set dpo.reference" in err
    assert "Traceback" not in err
