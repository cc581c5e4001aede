"""The real `sftpipe` entry point, end to end, on the shipped sample."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "support_sample.jsonl"
BAD = ROOT / "tests" / "assets" / "data" / "mixed_bad.jsonl"


def sftpipe(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "sftpipe.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def test_every_verb_has_help():
    out = sftpipe("--help")
    assert out.returncode == 0
    verbs = [v for v in ("render", "inspect") if v in out.stdout]
    assert verbs == ["render", "inspect"]
    for verb in verbs:
        res = sftpipe(verb, "--help")
        assert res.returncode == 0 and "--config" in res.stdout and "--set" in res.stdout



def test_export_help_lists_the_registered_formats_without_loading_torch():
    from sftpipe.export.formats import formats_help

    res = sftpipe("export", "--help")
    assert res.returncode == 0 and formats_help() in res.stdout
    heavy = subprocess.run([sys.executable, "-c", "import sys, sftpipe.cli; print(sorted(m for m in ('torch', "
                            "'transformers', 'fastapi') if m in sys.modules))"], capture_output=True, text=True,
                           timeout=120)
    assert heavy.stdout.strip() == "[]", heavy.stderr

def test_render_writes_rows_reports_and_parity(tmp_path):
    out = tmp_path / "r.jsonl"
    res = sftpipe("render", "--input", SAMPLE, "--output", out, "--max-length", 512)
    assert res.returncode == 0, res.stderr
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    lines = SAMPLE.read_text().splitlines()
    assert len(rows) == len(lines)
    for row in rows:
        assert len(row["input_ids"]) == len(row["labels"]) <= 512
        assert any(x != -100 for x in row["labels"]) and row["labels"][0] == -100
    report = json.loads((tmp_path / "r.mask_report.json").read_text())
    assert report["records_in"] == report["records_rendered"] == len(lines)
    assert report["mask"]["eot_coverage"] == 1.0
    parity = json.loads((tmp_path / "r.parity.json").read_text())
    assert parity["examples_checked"] == len(rows) and parity["text_mismatches"] == parity["token_mismatches"] == 0
    assert Path(parity["tokenizer_dir"]).is_dir()  # the saved tokenizer where it landed, not the staging folder
    assert "chat_template" in json.loads((tmp_path / "r.tokenizer" / "tokenizer_config.json").read_text())


def test_bad_input_fails_fast_with_one_line(tmp_path):
    res = sftpipe("render", "--input", BAD, "--output", tmp_path / "x.jsonl")
    assert res.returncode == 1
    err = res.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {BAD}:") and "Traceback" not in res.stderr
    assert not (tmp_path / "x.jsonl").exists()


def test_skip_mode_accounts_for_every_record(tmp_path):
    res = sftpipe("render", "--input", BAD, "--output", tmp_path / "x.jsonl", "--on-error", "skip")
    assert res.returncode == 0, res.stderr
    report = json.loads((tmp_path / "x.mask_report.json").read_text())
    rejects = [json.loads(x) for x in (tmp_path / "x.rejects.jsonl").read_text().splitlines()]
    assert report["records_in"] == report["records_rendered"] + report["records_rejected"]
    assert len(rejects) == report["records_rejected"] > 0
    assert all(r["reason"] and r["line"] for r in rejects)


def test_config_errors_are_all_reported_at_once(tmp_path):
    cfg = tmp_path / "sftpipe.yaml"
    cfg.write_text("model: smollm2-135m-instruct\nrender: {max_length: 4, train_on: first, colour: red}\nextra: 1\n")
    res = sftpipe("render", "-c", cfg, "--set", "data.format=xml")
    assert res.returncode == 2
    for needle in ("render.max_length", "render.train_on", "'all_assistant' or 'last_assistant'",
                   "render.colour: unknown key (allowed: max_length", "extra: unknown key", "data.format"):
        assert needle in res.stderr
    assert "Traceback" not in res.stderr


def test_inspect_highlights_one_example():
    res = sftpipe("inspect", "--input", SAMPLE, "--index", 2)
    assert res.returncode == 0, res.stderr
    assert "end-of-turn trained for 1/1 replies" in res.stdout  # message 2 of that record has train: false


def test_inspect_marks_trained_spans_when_piped():
    res = sftpipe("inspect", "--input", SAMPLE, "--index", 0)
    text = res.stdout.split("\n\n")[0]
    spans = re.findall("\u27e6(.*?)\u27e7", text, re.S)
    record = json.loads(SAMPLE.read_text(encoding="utf-8").splitlines()[0])
    replies = [m["content"] for m in record["messages"] if m["role"] == "assistant"]
    assert spans == [r + "<|im_end|>" for r in replies]  # the reply and its end-of-turn token, nothing else


@pytest.mark.parametrize("ref, says", [
    ("meta-llama/Llama-3.1-8B-Instruct", "is not in the hub cache"),  # a hub id neither cached nor reachable
    ("/no/such/folder", "is neither an embedded model"),
])
def test_a_model_that_cannot_be_found_is_one_line_with_the_fix(ref, says, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))  # an empty hub cache, whatever this machine holds
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    res = sftpipe("render", "--input", SAMPLE, "--output", tmp_path / "x.jsonl", "--model", ref)
    lines = [x for x in res.stderr.splitlines() if x.strip()]
    assert res.returncode == 1 and len(lines) == 1 and says in lines[0] and "fix:" in lines[0], res.stderr


def test_render_writes_parquet(tmp_path):
    import pyarrow.parquet as pq

    out = tmp_path / "r.parquet"
    res = sftpipe("render", "--input", SAMPLE, "--output", out, "--template", "chatml", "--train-on", "last_assistant")
    assert res.returncode == 0, res.stderr
    table = pq.read_table(out).to_pylist()
    assert len(table) == len(SAMPLE.read_text().splitlines())
    assert all(len(r["input_ids"]) == len(r["labels"]) for r in table) and "id" in table[0]
    assert json.loads((tmp_path / "r.parity.json").read_text())["token_mismatches"] == 0
