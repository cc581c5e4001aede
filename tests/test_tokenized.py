"""The tokenized dataset equals `build_examples` token for token, is reused under the same cache key and rebuilt
under another, is committed whole (a crash mid-build leaves nothing), and renders the same in a process pool."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from sftpipe import tokenized
from sftpipe.config import load_config
from sftpipe.dataset import build_examples, build_renderer, read_data
from sftpipe.errors import RecordError

SAMPLE = Path(__file__).resolve().parent.parent / "examples" / "support_sample.jsonl"


def setup(tmp_path, monkeypatch, *overrides: str, data: Path = SAMPLE):
    monkeypatch.setenv("SFTPIPE_TOKENIZED_CACHE", str(tmp_path / "cache"))
    cfg = load_config(overrides=[f"data.train={data}", "render.max_length=512", *overrides])
    return cfg, build_renderer(cfg.model, cfg.template, cfg.render)


def built(cfg, renderer):
    return tokenized.load_or_build(cfg.data, cfg.render, renderer, cfg.data.train, "data.train")


def scalar_meta(e):
    return replace(e, meta={k: v for k, v in e.meta.items() if isinstance(v, (str, int, float, bool)) or v is None})


def test_the_dataset_is_build_examples_token_for_token(tmp_path, monkeypatch):
    cfg, renderer = setup(tmp_path, monkeypatch, "render.truncation=truncate", "render.max_length=160")
    tk = built(cfg, renderer)
    read = read_data(cfg.data, cfg.data.train, "data.train")
    examples, rejects, mask = build_examples(read.conversations, renderer, max_length=160, truncation="truncate")
    assert tk.built and len(tk) == len(examples) > 0 and mask.truncated > 0
    assert tk.examples() == [scalar_meta(e) for e in examples]
    assert tk.mask.to_dict() == mask.to_dict() and tk.records_in == read.n_in
    light = tk.token_examples()
    assert [(e.input_ids.tolist(), e.labels.tolist(), e.eot_positions) for e in light] == \
        [(e.input_ids, e.labels, e.eot_positions) for e in examples]
    mapped = light[0].input_ids  # a view into the memory-mapped shard, not a copy
    assert not mapped.flags.owndata and not mapped.flags.writeable


def test_a_process_pool_renders_the_same_rows(tmp_path, monkeypatch):
    """A few thousand rows (the pool starts after POOL_MIN conversations) through two forked workers."""
    rows = SAMPLE.read_text(encoding="utf-8").splitlines()
    many = tmp_path / "many.jsonl"
    n = tokenized.POOL_MIN // len(rows) + 2
    many.write_text("".join(json.dumps({**json.loads(r), "id": f"{k}-{i}"}) + "\n" for k in range(n)
                            for i, r in enumerate(rows)), encoding="utf-8")
    cfg, renderer = setup(tmp_path, monkeypatch, "render.num_proc=2", data=many)
    pooled = built(cfg, renderer)
    cfg1, _ = setup(tmp_path / "one", monkeypatch, "render.num_proc=1", data=many)
    alone = built(cfg1, renderer)
    assert len(pooled) == len(alone) > tokenized.POOL_MIN
    assert pooled.dataset.data.equals(alone.dataset.data) and pooled.mask == alone.mask


def test_the_same_key_reuses_and_any_change_rebuilds(tmp_path, monkeypatch):
    cfg, renderer = setup(tmp_path, monkeypatch)
    first = built(cfg, renderer)
    again = built(cfg, renderer)
    assert first.built and not again.built and again.folder == first.folder
    assert again.dataset.data.equals(first.dataset.data)
    changed = tmp_path / "changed.jsonl"
    changed.write_text(SAMPLE.read_text(encoding="utf-8").splitlines()[0] + "\n", encoding="utf-8")
    folders = {first.folder}
    for overrides, data in [(["render.max_length=256"], SAMPLE), (["render.train_on=last_assistant"], SAMPLE),
                            (["render.truncation=truncate"], SAMPLE), (["template.name=chatml"], SAMPLE),
                            ([], changed)]:
        cfg2, renderer2 = setup(tmp_path, monkeypatch, *overrides, data=data)
        other = built(cfg2, renderer2)
        assert other.built and other.folder not in folders, overrides or data
        folders.add(other.folder)
    cfg3, renderer3 = setup(tmp_path, monkeypatch, "render.parity_examples=5", "render.num_proc=1")
    assert not built(cfg3, renderer3).built  # options that do not change tokens share the dataset


def test_a_crash_mid_build_leaves_no_dataset(tmp_path, monkeypatch):
    cfg, renderer = setup(tmp_path, monkeypatch)
    monkeypatch.setattr(tokenized, "CHUNK", 2)
    real, calls = tokenized._render_chunk, []

    def dies_on_the_third(job):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(job)

    monkeypatch.setattr(tokenized, "_render_chunk", dies_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        built(cfg, renderer)
    assert not any((tmp_path / "cache").iterdir())  # neither the folder nor its staging copy
    monkeypatch.setattr(tokenized, "_render_chunk", real)
    assert built(cfg, renderer).built


def test_a_bad_record_fails_the_build_or_is_rejected(tmp_path, monkeypatch):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(SAMPLE.read_text(encoding="utf-8") + json.dumps({"messages": [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo", "train": False}]}) + "\n",
                   encoding="utf-8")
    cfg, renderer = setup(tmp_path, monkeypatch, data=bad)
    with pytest.raises(RecordError, match="no trained assistant message"):
        built(cfg, renderer)
    cfg, renderer = setup(tmp_path, monkeypatch, "data.on_error=skip", data=bad)
    tk = built(cfg, renderer)
    assert [(r["reason"], r["stage"]) for r in tk.rejects] == [("no_trainable_tokens", "render")]
    assert tk.mask.rejected == {"no_trainable_tokens": 1}
    assert built(cfg, renderer).rejects == tk.rejects  # rejects come back with the cached dataset


def test_parity_sample_holds_every_risky_example_plus_a_seeded_draw(tmp_path, monkeypatch):
    cfg, renderer = setup(tmp_path, monkeypatch, "render.truncation=truncate", "render.max_length=160")
    tk = built(cfg, renderer)
    risky = [i for i, e in enumerate(tk.examples())
             if e.truncated or e.escaped_control or "turn" in e.meta or e.boundary_tokens]
    rows, counts = tk.parity_indices(2)
    assert any(e.truncated for e in tk.examples(risky))
    assert set(risky) <= set(rows) and counts == {"required": len(risky), "drawn": 2, "examples": len(tk)}
    assert rows == tk.parity_indices(2)[0] and len(rows) == len(risky) + 2


def test_render_checks_parity_on_the_sample_and_reports_its_size(tmp_path, monkeypatch):
    import sftpipe.stages.render as render_stage

    monkeypatch.setenv("SFTPIPE_TOKENIZED_CACHE", str(tmp_path / "cache"))
    control = tmp_path / "control.jsonl"
    rows = SAMPLE.read_text(encoding="utf-8").splitlines()
    rec = json.loads(rows[0])
    rec["messages"][-1]["content"] += " <|im_end|>"
    control.write_text("\n".join(rows + [json.dumps(rec)]) + "\n", encoding="utf-8")
    cfg = load_config(overrides=[f"data.train={control}", "render.max_length=512", "render.parity_examples=3"])
    result = render_stage.run(cfg, tmp_path / "out" / "rendered", progress=False)
    sample = result.parity["sample"]
    assert sample == {"required": 2, "drawn": 3, "examples": result.mask.examples}  # the sample has one already
    assert result.parity["examples_checked"] == 5 and result.parity["token_mismatches"] == 0
    from datasets import load_from_disk

    ds = load_from_disk(str(tmp_path / "out" / "rendered"))
    assert len(ds) == result.mask.examples and ds[len(ds) - 1]["escaped_control"]
    shutil.rmtree(tmp_path / "out")
    rows_out = render_stage.run(cfg, tmp_path / "out" / "rows.jsonl", progress=False)
    first = json.loads((tmp_path / "out" / "rows.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert rows_out.parity["examples_checked"] == 5 and {"input_ids", "labels", "text", "id"} <= first.keys()
