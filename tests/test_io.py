"""Atomic writes: content, formats, permissions, and what a failure mid-write leaves behind."""

from __future__ import annotations

import hashlib
import json
import os
import stat

import pyarrow.parquet as pq
import pytest

from sftpipe.io import (atomic_write_bytes, atomic_write_text, sha256_file, write_json, write_jsonl, write_parquet,
                        write_records)


def failing(records, after):
    """Yield `after` records, then raise, like a crashing pipeline stage."""
    yield from records[:after]
    raise RuntimeError("stage crashed")


def test_write_jsonl_one_object_per_line_utf8_and_count(tmp_path):
    records = [{"q": "café 📦", "n": 1}, {"q": "line\nbreak \u2028"}, {}]
    path = tmp_path / "deep" / "er" / "out.jsonl"  # parent folders are created
    assert write_jsonl(path, iter(records)) == 3
    raw = path.read_bytes()
    assert "café 📦".encode() in raw  # not \u-escaped
    lines = raw.split(b"\n")
    assert lines[-1] == b"" and [json.loads(x) for x in lines[:-1]] == records


@pytest.mark.parametrize("after", [0, 2])
def test_failure_mid_write_keeps_previous_file_and_leaves_no_temp(tmp_path, after):
    path = tmp_path / "train.jsonl"
    write_jsonl(path, [{"old": True}])
    before = path.read_bytes()
    with pytest.raises(RuntimeError, match="stage crashed"):
        write_jsonl(path, failing([{"new": 1}, {"new": 2}, {"new": 3}], after))
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["train.jsonl"]


def test_failed_first_write_creates_nothing(tmp_path):
    with pytest.raises(TypeError):
        write_jsonl(tmp_path / "a.jsonl", [{"ok": 1}, {"bad": object()}])
    with pytest.raises(TypeError):
        atomic_write_bytes(tmp_path / "b.bin", "not bytes")
    assert os.listdir(tmp_path) == []


def test_atomic_write_text_and_bytes_replace_content(tmp_path):
    path = tmp_path / "note.txt"
    atomic_write_text(path, "first\r\n")
    assert path.read_bytes() == b"first\r\n"  # no newline translation
    atomic_write_bytes(path, b"\x00second")
    assert path.read_bytes() == b"\x00second"


def test_new_files_get_umask_mode_and_existing_files_keep_theirs(tmp_path):
    umask = os.umask(0)
    os.umask(umask)
    fresh = tmp_path / "fresh.txt"
    atomic_write_text(fresh, "x")
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o666 & ~umask  # like open(), not mkstemp's 0600
    kept = tmp_path / "kept.txt"
    kept.write_text("x")
    os.chmod(kept, 0o640)
    atomic_write_text(kept, "y")
    assert stat.S_IMODE(kept.stat().st_mode) == 0o640 and kept.read_text() == "y"


def test_write_json_keeps_key_order_unicode_and_trailing_newline(tmp_path):
    path = tmp_path / "report.json"
    write_json(path, {"zeta": 1, "alpha": "ü"})
    text = path.read_text(encoding="utf-8")
    assert text == '{\n  "zeta": 1,\n  "alpha": "ü"\n}\n'


def test_write_parquet_keeps_every_key_of_every_record(tmp_path):
    records = [{"id": 1, "messages": [{"role": "user", "content": "q"}]},
               {"id": 2, "messages": [{"role": "assistant", "content": "a", "train": True}], "lang": "fr"}]
    path = tmp_path / "d.parquet"
    assert write_parquet(path, records) == 2
    rows = pq.read_table(path).to_pylist()
    assert [r["lang"] for r in rows] == [None, "fr"]  # a key only the second record has is not dropped
    assert rows[1]["messages"][0]["train"] is True and rows[0]["messages"][0]["train"] is None


def test_write_parquet_mixed_types_name_the_column_and_keep_previous_file(tmp_path):
    path = tmp_path / "d.parquet"
    write_parquet(path, [{"content": "a"}])
    before = path.read_bytes()
    with pytest.raises(ValueError, match="column 'content'"):
        write_parquet(path, [{"content": "a"}, {"content": [{"type": "text", "text": "b"}]}])
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["d.parquet"]


def test_write_records_picks_the_writer_by_extension(tmp_path):
    records = [{"a": 1}, {"a": 2}]
    assert write_records(tmp_path / "x.jsonl", records) == 2
    assert write_records(tmp_path / "x.json", iter(records)) == 2
    assert write_records(tmp_path / "x.parquet", iter(records)) == 2
    assert (tmp_path / "x.json").read_bytes() == (tmp_path / "x.jsonl").read_bytes()
    assert pq.read_table(tmp_path / "x.parquet").to_pylist() == records
    with pytest.raises(ValueError, match=r"'\.csv' \(supported: \.jsonl, \.json, \.parquet\)"):
        write_records(tmp_path / "x.csv", records)


def test_sha256_file_matches_hashlib_and_tracks_content(tmp_path):
    path = tmp_path / "f.bin"
    atomic_write_bytes(path, b"abc" * 100_000)
    assert sha256_file(path) == hashlib.sha256(b"abc" * 100_000).hexdigest()
    atomic_write_bytes(path, b"abd")
    assert sha256_file(path) == hashlib.sha256(b"abd").hexdigest()
