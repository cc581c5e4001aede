"""`sftpipe train` under torchrun with 2 CPU processes, one step, on a dataset `sftpipe render` already built
(bench/scale_bench.py runs it per size, on the cache its render side filled): when each rank's data is ready, and
which ranks rendered. Prints one JSON line: per rank, seconds from the launch to the end of its data loading, and
whether it built the dataset.

    .venv/bin/python bench/train_ready.py DATA.jsonl WORK_DIR   (SFTPIPE_TOKENIZED_CACHE: the render's cache)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

# sftpipe's CLI with load_split and the dataset build timed per rank (wall clock, shared by the processes)
TIMED_CLI = """
import json, os, time
from sftpipe import tokenized
from sftpipe.train import data
from sftpipe.stages import train as stage
log = os.environ["READY_LOG"]
def note(event):
    with open(log, "a") as f:
        f.write(json.dumps({"rank": int(os.environ["RANK"]), "event": event, "t": time.time()}) + "\\n")
real_build, real_split = tokenized.build, data.load_split
def build(*a, **k):
    note("build")
    return real_build(*a, **k)
def load_split(*a, **k):
    out = real_split(*a, **k)
    note("ready " + a[2])
    return out
tokenized.build, stage.load_split = build, load_split
from sftpipe.cli import app
app()
"""


def main() -> None:
    data, work = Path(sys.argv[1]), Path(sys.argv[2])
    work.mkdir(parents=True, exist_ok=True)
    cli, log = work / "timed_cli.py", work / "ready.jsonl"
    cli.write_text(TIMED_CLI, encoding="utf-8")
    log.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(cli),
           "train", "-i", str(data), "--set", "data.on_error=skip", "--set", "train.max_steps=1",
           "--set", f"train.output_dir={work / 'runs'}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "READY_LOG": str(log)}
    t0 = time.time()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if res.returncode:
        print(res.stderr[-3000:], file=sys.stderr)
    events = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
    ready = {e["rank"]: round(e["t"] - t0, 1) for e in events if e["event"] == "ready train"}
    print(json.dumps({"rc": res.returncode, "ready_seconds": ready,
                      "ready_gap_seconds": round(abs(ready[1] - ready[0]), 1) if len(ready) == 2 else None,
                      "ranks_that_rendered": sorted({e["rank"] for e in events if e["event"] == "build"})}))


if __name__ == "__main__":
    main()
