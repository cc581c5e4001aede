"""The eval cache of a plain baseline model: a repeat eval loads no baseline model and reproduces its results; any
change to what decides them, a corrupt entry, `cache_baseline: false` or a run-folder baseline is a miss."""

from __future__ import annotations

import doctest
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

import sftpipe.evaluate.cache as cache_mod
import sftpipe.stages.eval as eval_stage
from sftpipe.config import load_config
from sftpipe.evaluate.cache import BaselineCache, eval_cache_dir, read_entry

from .test_stage import _eval_cfg


@pytest.fixture()
def eval_cache(tmp_path, monkeypatch) -> Path:
    """This test's own eval cache (the models cache stays where it is)."""
    folder = tmp_path / "eval-cache"
    monkeypatch.setenv("SFTPIPE_EVAL_CACHE", str(folder))
    return folder


def _eval(raw: dict, run_dir: Path, **kw) -> tuple[dict, list[str]]:
    logs: list[str] = []
    result = eval_stage.run(load_config(None, base=raw), run_dir, log=logs.append, **kw)
    return json.loads((result.metrics_path).read_text(encoding="utf-8")), logs


def _generations(run_dir: Path, label: str = "baseline") -> dict[str, bytes]:
    folder = run_dir / "eval" / "generations" / label
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _generated_baseline(logs: list[str]) -> bool:
    return any(line.startswith("baseline: generating") for line in logs)


def _no_loading(*args, **kwargs):
    raise AssertionError("the baseline model was loaded")


def test_second_eval_of_the_same_baseline_is_a_hit(fake_run, demo_data, eval_cache, monkeypatch, tmp_path):
    run_dir = fake_run()
    raw = _eval_cfg(demo_data, regression={"ifeval": True, "ifeval_subset": 2, "ifeval_max_new_tokens": 4})
    first, logs = _eval(raw, run_dir)
    key = first["baseline_cache"]["key"]
    assert first["baseline_cache"]["hit"] is False and _generated_baseline(logs)
    assert read_entry(eval_cache / key, key) is not None
    before = _generations(run_dir)
    assert set(before) == {"compliance.jsonl", "redteam.jsonl", "ifeval.jsonl"}
    shutil.rmtree(run_dir / "eval")

    monkeypatch.setattr(eval_stage, "load_reference", _no_loading)
    second, logs = _eval(raw, run_dir)
    base = first["baseline"]["ref"]
    assert f"baseline: {base} (cached eval {key[:12]})" in logs and not _generated_baseline(logs)
    assert second["baseline_cache"] == {**first["baseline_cache"], "hit": True}
    assert second["models"]["baseline"] == first["models"]["baseline"]
    assert _generations(run_dir) == before  # byte for byte as evaluate_model writes them
    assert set(_generations(run_dir, "final")) == set(before)  # the candidate still runs

    # the same weights under another name: a hit, reported under the name this run gave
    copy = shutil.copytree(base, tmp_path / "same-weights")
    third, logs = _eval(raw, run_dir, against=str(copy))
    assert third["baseline_cache"]["hit"] is True and third["baseline"]["ref"] == str(copy)


def test_changed_item_or_generation_setting_is_a_miss(fake_run, demo_data, eval_cache, tmp_path, monkeypatch):
    run_dir = fake_run()
    records = (demo_data / "eval" / "compliance.jsonl").read_text(encoding="utf-8").splitlines()[:2]
    eval_file = tmp_path / "set.jsonl"
    eval_file.write_text("\n".join(records) + "\n", encoding="utf-8")
    raw = _eval_cfg(demo_data)
    raw["eval"]["sets"] = [{"name": "set", "path": str(eval_file)}]
    first, _ = _eval(raw, run_dir)

    rec = json.loads(records[1])
    rec["messages"][1]["content"] += " Thanks."  # one prompt of one item, same file and config
    eval_file.write_text("\n".join([records[0], json.dumps(rec)]) + "\n", encoding="utf-8")
    changed, logs = _eval(raw, run_dir)
    assert changed["baseline_cache"]["hit"] is False and _generated_baseline(logs)
    assert changed["baseline_cache"]["key"] != first["baseline_cache"]["key"]

    raw["eval"]["generation"]["max_new_tokens"] = 5
    longer, logs = _eval(raw, run_dir)
    assert longer["baseline_cache"]["hit"] is False and _generated_baseline(logs)
    assert len({changed["baseline_cache"]["key"], longer["baseline_cache"]["key"],
                first["baseline_cache"]["key"]}) == 3
    assert len(list(eval_cache.iterdir())) == 3

    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # the same model and items on kernels held to AVX2
    held, logs = _eval(raw, run_dir)
    assert held["baseline_cache"]["hit"] is False and _generated_baseline(logs)


def test_truncated_entry_is_a_miss_and_is_rewritten(fake_run, demo_data, eval_cache):
    run_dir = fake_run()
    raw = _eval_cfg(demo_data)
    first, _ = _eval(raw, run_dir)
    key = first["baseline_cache"]["key"]
    good = read_entry(eval_cache / key, key)
    stored = eval_cache / key / "generations" / "compliance.jsonl"
    stored.write_bytes(stored.read_bytes()[: stored.stat().st_size // 2])  # a torn copy

    second, logs = _eval(raw, run_dir)
    assert second["baseline_cache"] == {**first["baseline_cache"], "hit": False} and _generated_baseline(logs)
    again = read_entry(eval_cache / key, key)  # rewritten whole (metrics.json differs only in timings)
    assert again is not None and {k: v for k, v in again.items() if k != "metrics.json"} \
        == {k: v for k, v in good.items() if k != "metrics.json"}
    assert [p.name for p in eval_cache.iterdir()] == [key]  # no staging or old folder left beside it


def _entry(tmp_path: Path) -> BaselineCache:
    """A stored entry of one set, without any model."""
    out = tmp_path / "run" / "eval"
    (out / "generations" / "baseline").mkdir(parents=True)
    (out / "generations" / "baseline" / "a.jsonl").write_text('{"output": "hi"}\n', encoding="utf-8")
    (out / "generations" / "baseline" / "stale.jsonl").write_text("{}\n", encoding="utf-8")  # not this eval's
    inp = SimpleNamespace(out_dir=out, sets=[SimpleNamespace(name="a", generate=True)])
    entry = BaselineCache("m", "k" * 64, tmp_path / "cache" / ("k" * 64), inp)
    assert entry.store("baseline", {"model": {"label": "baseline", "ref": "old"}, "sets": {}}, {"a": ["hi"]})
    return entry


@pytest.mark.parametrize("damage", ["none", "no manifest", "manifest not JSON", "other key", "file missing",
                                    "metrics not JSON", "path outside the entry"])
def test_a_damaged_entry_is_a_miss_never_an_error(tmp_path, damage):
    entry = _entry(tmp_path)
    folder, manifest = entry.folder, entry.folder / "cache.json"
    data = json.loads(manifest.read_text(encoding="utf-8"))
    if damage == "no manifest":
        manifest.unlink()
    elif damage == "manifest not JSON":
        manifest.write_text("{", encoding="utf-8")
    elif damage == "other key":
        manifest.write_text(json.dumps({**data, "key": "x"}), encoding="utf-8")
    elif damage == "file missing":
        (folder / "replies.json").unlink()
    elif damage == "metrics not JSON":
        (folder / "metrics.json").write_bytes(b"[nope")
        data["files"]["metrics.json"] = {"size": 5, "sha256": cache_mod.hashlib.sha256(b"[nope").hexdigest()}
        manifest.write_text(json.dumps(data), encoding="utf-8")
    elif damage == "path outside the entry":
        (tmp_path / "cache" / "x.jsonl").write_text("{}\n", encoding="utf-8")
        data["files"]["generations/../../x.jsonl"] = {"size": 3, "sha256": cache_mod.sha256_file(tmp_path / "cache"
                                                                                                   / "x.jsonl")}
        manifest.write_text(json.dumps(data), encoding="utf-8")
    shutil.rmtree(entry.inp.out_dir / "generations")
    got = entry.load("baseline")
    if damage == "none":
        assert got == ({"model": {"label": "baseline", "ref": "m"}, "sets": {}}, {"a": ["hi"]})
        assert _generations(tmp_path / "run") == {"a.jsonl": b'{"output": "hi"}\n'}  # not the stale file
    else:
        assert got is None and not (entry.inp.out_dir / "generations").exists()


def test_cache_baseline_false_never_reads_or_writes_the_cache(fake_run, demo_data, eval_cache):
    run_dir = fake_run()
    raw = _eval_cfg(demo_data, cache_baseline=False)
    off, logs = _eval(raw, run_dir)
    assert off["baseline_cache"] is None and _generated_baseline(logs) and not eval_cache.exists()
    raw["eval"]["cache_baseline"] = True
    on, _ = _eval(raw, run_dir)  # fills the cache for the same inputs ...
    entry = eval_cache / on["baseline_cache"]["key"]
    stamp = (entry / "cache.json").stat().st_mtime_ns
    raw["eval"]["cache_baseline"] = False
    off, logs = _eval(raw, run_dir)  # ... which an eval with the cache off neither reads nor rewrites
    assert off["baseline_cache"] is None and _generated_baseline(logs)
    assert not any("cached eval" in line for line in logs)
    assert [p.name for p in eval_cache.iterdir()] == [entry.name] and (entry / "cache.json").stat().st_mtime_ns == stamp


def test_a_run_folder_baseline_is_never_cached(fake_run, demo_data, eval_cache):
    run_dir = fake_run(checkpoints=(5,))
    raw = _eval_cfg(demo_data)
    raw["eval"]["sets"] = raw["eval"]["sets"][1:]
    for against in (run_dir, run_dir / "checkpoints" / "checkpoint-5", run_dir):
        metrics, logs = _eval(raw, run_dir, against=str(against))
        assert metrics["baseline_cache"] is None and _generated_baseline(logs)
    assert not eval_cache.exists()


def test_the_cache_folder_follows_the_cache_root(tmp_path, monkeypatch):
    monkeypatch.delenv("SFTPIPE_EVAL_CACHE", raising=False)
    monkeypatch.setenv("SFTPIPE_CACHE", str(tmp_path))
    assert eval_cache_dir() == tmp_path / "eval"
    monkeypatch.setenv("SFTPIPE_EVAL_CACHE", str(tmp_path / "elsewhere"))
    assert eval_cache_dir() == tmp_path / "elsewhere"


def test_doctests():
    result = doctest.testmod(cache_mod)
    assert result.failed == 0 and result.attempted > 0


def test_the_source_digest_follows_eval_code_only(tmp_path):
    """A change in training, DPO or the CLI keeps the baseline entry warm; one in evaluate, generate, render or a
    config section the eval reads makes a new key."""
    src = Path(cache_mod.__file__).resolve().parents[1]
    before = cache_mod.source_digest(src)

    def edited(name: str, files: tuple[str, ...]) -> str:
        root = tmp_path / name  # a new folder each time (source_digest is cached per folder)
        shutil.copytree(src, root, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        for f in files:
            (root / f).write_text((root / f).read_text() + "\n# edited\n")
        return cache_mod.source_digest(root)

    assert edited("same", ()) == before
    assert edited("other", ("train/trainer.py", "dpo/logps.py", "stages/eval.py", "demo/generate.py", "cli.py")) \
        == before
    for i, f in enumerate(("evaluate/evaluator.py", "generate/engine.py", "render.py", "config/curate.py")):
        assert edited(f"eval{i}", (f,)) != before, f
