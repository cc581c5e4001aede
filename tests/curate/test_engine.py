"""curate.engine: shards cover every line once with the right line numbers; tasks give the same outputs on the
local and Ray executors; a failed or killed run, rerun, skips its finished tasks and ends as a clean run does."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from sftpipe.config.curate import CurateConfig
from sftpipe.curate.engine import EngineConfig, Shard, iter_shard_lines, plan_shards, run_tasks, shard_rows
from sftpipe.errors import RecordError, TaskError
from sftpipe.readers import file_lines, raw_rows, read_rows

HERE = Path(__file__).parent
ROOT = HERE.parents[1]


# --- shards ------------------------------------------------------------------------------------------------------

LINE = st.one_of(st.just(b""), st.just(b"   "), st.builds(lambda n: json.dumps({"n": n}).encode(), st.integers()),
                 st.just(b"not json"), st.just(b'{"t": "\xc3\xa9"}'))


@settings(max_examples=200, deadline=None)
@given(lines=st.lists(st.tuples(LINE, st.sampled_from([b"\n", b"\r\n"])), max_size=40), last=st.booleans(),
       bom=st.booleans(), target=st.integers(1, 120))
def test_jsonl_shards_cover_every_line_once_with_its_number(tmp_path_factory, lines, last, bom, target):
    data = (b"\xef\xbb\xbf" if bom else b"") + b"".join(text + end for text, end in lines)
    if lines and not last:  # no final newline
        data = data.removesuffix(lines[-1][1])
    path = tmp_path_factory.getbasetemp() / "shards.jsonl"  # one file, rewritten by each example
    path.write_bytes(data)
    shards = plan_shards([path], target)
    ends = [0] + [s.end for s in shards]
    assert [s.start for s in shards] == ends[:-1] and ends[-1] == len(data)  # contiguous, from 0 to the end
    assert all(data[s.end - 1:s.end] == b"\n" for s in shards[:-1])  # cut only after a line end
    assert all(s.end - s.start >= target for s in shards[:-1])
    assert [x for s in shards for x in iter_shard_lines(s)] == list(file_lines(path))
    assert [plain(r) for s in shards for r in shard_rows(s)] == [plain(r) for r in raw_rows(path)]


def plain(row: tuple) -> tuple:
    """A reader row with its error as text (errors compare by identity)."""
    line, obj, err = row
    return line, obj, err and err.to_dict()


def test_a_shard_cut_lands_past_a_read_block(tmp_path, monkeypatch):
    monkeypatch.setattr("sftpipe.curate.engine.BLOCK", 16)
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"".join(b'{"n": %d, "pad": "%s"}\n' % (i, b"x" * (i % 23)) for i in range(300)))
    shards = plan_shards([path], 50)
    assert len(shards) > 50
    assert [x for s in shards for x in iter_shard_lines(s)] == list(file_lines(path))


def test_parquet_shards_are_runs_of_row_groups_numbered_by_file_row(tmp_path):
    path = tmp_path / "in.parquet"
    rows = [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(50)]
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=7)
    (tmp_path / "empty.jsonl").write_bytes(b"")
    shards = plan_shards([path, tmp_path / "empty.jsonl"], 1)
    assert [(s.start, s.end) for s in shards] == [(g, g + 1) for g in range(8)]  # the empty file has no shard
    assert [s.first_line for s in shards] == [1 + 7 * g for g in range(8)]
    assert [plain(r) for s in shards for r in shard_rows(s)] == [plain(r) for r in raw_rows(path)]
    assert len(plan_shards([path], 10**9)) == 1
    convs = [out for s in shards for _, out in read_rows(path, shard_rows(s), format="alpaca")]
    assert [c.source.line for c in convs] == list(range(1, 51))


def test_unknown_extension_and_bad_target_name_the_fix(tmp_path):
    with pytest.raises(ValueError, match=r"unknown extension '\.csv'.*fix"):
        plan_shards([tmp_path / "x.csv"], 10)
    with pytest.raises(ValueError, match="target_bytes 0 must be at least 1"):
        plan_shards([], 0)


# --- tasks -------------------------------------------------------------------------------------------------------

@dataclass
class CopyShard:
    """Toy phase task: writes shard i's (line, record) pairs to out/i.jsonl (temp + replace), counts its runs in
    calls/i, fails on `fail_on` when `fail` exists and waits on `hold_on` until `release` exists."""

    shards: list[Shard]
    out: str
    fail_on: int = -1
    hold_on: int = -1

    def __call__(self, i: int) -> None:
        out = Path(self.out)
        with open(out / "calls" / str(i), "a") as f:
            f.write("x")
        if i == self.fail_on and (out / "fail").exists():
            raise RecordError("parse", "invalid JSON", path=self.shards[i].path, line=self.shards[i].first_line,
                              fix="repair the line")
        while i == self.hold_on and not (out / "release").exists():
            time.sleep(0.05)
        text = "".join(json.dumps([n, obj]) + "\n" for n, obj, _ in shard_rows(self.shards[i]))
        tmp = out / f"{i}.jsonl.tmp"
        tmp.write_text(text)
        os.replace(tmp, out / f"{i}.jsonl")


def make_input(folder: Path) -> Path:
    path = folder / "in.jsonl"
    path.write_text("".join(json.dumps({"n": i, "text": "y" * (i % 17)}) + "\n" for i in range(400)))
    return path


def prepared(tmp_path: Path, name: str, **kw) -> tuple[CopyShard, Path]:
    out = tmp_path / name
    (out / "calls").mkdir(parents=True)
    shards = plan_shards([make_input(tmp_path)], 2000)
    return CopyShard(shards, str(out), **kw), out


def outputs(out: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(out.glob("*.jsonl"))}


def calls(out: Path) -> dict[int, int]:
    return {int(p.name): len(p.read_text()) for p in (out / "calls").iterdir()}


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("clean")
    task, out = prepared(tmp, "out")
    run_tasks(task, len(task.shards), EngineConfig("local", workers=1), tmp / "work", "copy")
    assert len(task.shards) > 6 and all(n == 1 for n in calls(out).values())
    return outputs(out)


def test_local_workers_give_the_outputs_of_one_worker(tmp_path, clean):
    task, out = prepared(tmp_path, "out")
    run_tasks(task, len(task.shards), EngineConfig("local", workers=2), tmp_path / "work", "copy")
    assert outputs(out) == clean


def test_a_failed_task_raises_its_own_error_and_a_rerun_runs_only_the_unfinished(tmp_path, clean):
    task, out = prepared(tmp_path, "out", fail_on=3)
    (out / "fail").touch()
    with pytest.raises(RecordError, match="in.jsonl:.*invalid JSON. Fix: repair the line") as e:
        run_tasks(task, len(task.shards), EngineConfig("local", workers=1), tmp_path / "work", "copy")
    assert any("task 3 of 'copy'; its log: " in note for note in e.value.__notes__)
    first = calls(out)
    (out / "fail").unlink()
    run_tasks(task, len(task.shards), EngineConfig("local", workers=1), tmp_path / "work", "copy")
    again = calls(out)
    assert {i: again[i] - first.get(i, 0) for i in again} == {i: int(i >= 3) for i in range(len(task.shards))}
    assert outputs(out) == clean


def test_a_failure_in_a_worker_process_comes_back_as_the_same_error(tmp_path):
    task, out = prepared(tmp_path, "out", fail_on=1)
    (out / "fail").touch()
    with pytest.raises(RecordError, match="invalid JSON"):
        run_tasks(task, len(task.shards), EngineConfig("local", workers=2), tmp_path / "work", "copy")


def test_errors_come_back_from_json_as_they_were_or_as_a_task_error(tmp_path):
    from sftpipe.curate.executors import load_error, save_error

    class Odd(Exception):
        def __init__(self, a, b):
            super().__init__(f"{a}/{b}")

    err = RecordError("parse", "invalid JSON", path="a.jsonl", line=3, fix="repair the line")
    for e in (Odd(1, 2), ValueError("bad value"), err):
        save_error(e, tmp_path / "e.json")
        json.loads((tmp_path / "e.json").read_text())  # plain JSON, never a pickle
        back = load_error(tmp_path / "e.json")
        assert (type(back), str(back)) == ((TaskError, "Odd: 1/2") if isinstance(e, Odd) else (type(e), str(e)))


KILLED = """
import sys
from tests.curate.test_engine import prepared
from sftpipe.curate.engine import EngineConfig, run_tasks
from pathlib import Path
if __name__ == "__main__":
    tmp = Path(sys.argv[1])
    task, out = prepared(tmp, "out", hold_on=int(sys.argv[2]))
    run_tasks(task, len(task.shards), EngineConfig("local", workers=1), tmp / "work", "copy")
"""


def test_a_killed_run_resumes_without_redoing_finished_tasks(tmp_path, clean):
    n = len(clean)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    proc = subprocess.Popen([sys.executable, "-c", KILLED, str(tmp_path), str(n - 2)], cwd=ROOT, env=env,
                            start_new_session=True, stderr=subprocess.PIPE)
    done = tmp_path / "work" / "logs" / "copy" / "completions"
    deadline = time.time() + 120
    while not (done.is_dir() and len(list(done.iterdir())) == n - 2) and time.time() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        time.sleep(0.1)
    time.sleep(0.3)  # task n-2 is waiting for `release`
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    out = tmp_path / "out"
    assert calls(out) == {**dict.fromkeys(range(n - 2), 1), n - 2: 1}
    (out / "release").touch()
    task = CopyShard(plan_shards([tmp_path / "in.jsonl"], 2000), str(out), hold_on=n - 2)
    run_tasks(task, n, EngineConfig("local", workers=1), tmp_path / "work", "copy")
    assert calls(out) == {**dict.fromkeys(range(n - 2), 1), n - 2: 2, n - 1: 1}
    assert outputs(out) == clean


# --- config ------------------------------------------------------------------------------------------------------

def test_executor_config_defaults_and_errors():
    cfg = CurateConfig()
    assert (cfg.executor.kind, cfg.executor.address, cfg.executor.shard_mb) == ("local", None, 64)
    assert EngineConfig.from_curate(CurateConfig.model_validate(
        {"workers": 3, "executor": {"kind": "ray", "address": "auto"}})) == EngineConfig("ray", 3, "auto")
    with pytest.raises(ValidationError, match="only used by kind 'ray'.*fix: set curate.executor.kind: ray"):
        CurateConfig.model_validate({"executor": {"address": "auto"}})
    with pytest.raises(ValidationError, match="'local' or 'ray'"):
        CurateConfig.model_validate({"executor": {"kind": "slurm"}})
    with pytest.raises(ValueError, match="unknown executor kind 'dask' .allowed: local, ray"):
        run_tasks(print, 1, EngineConfig("dask"), Path("."), "x")  # type: ignore[arg-type]
