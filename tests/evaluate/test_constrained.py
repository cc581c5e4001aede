"""Schema-constrained generation in eval: `generate(..., schemas=...)` replies parse and validate, and
`eval.constrained_schema` reports constrained schema validity beside the free one without touching anything else."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from sftpipe.checks import schema_valid
from sftpipe.config import load_config
from sftpipe.errors import ConfigError
from sftpipe.evaluate.cache import key_parts
from sftpipe.evaluate.evaluator import Inputs, constrained_validity
from sftpipe.evaluate.items import load_items
from sftpipe.evaluate.report import card_markdown
from sftpipe.generate import generate
from sftpipe.models import tiny_model
from sftpipe.render import ChatRenderer
from sftpipe.stages.eval import run
from sftpipe.templates import load_template

# Bounded schemas (integers in a range, enums, short strings, no extra keys), so a random model's walk through
# the grammar ends well before max_new_tokens; the layout is json.dumps's (", " / ": ", no other whitespace).
TICKET = {"type": "object", "properties": {
    "priority": {"type": "integer", "minimum": 1, "maximum": 5},
    "queue": {"enum": ["billing", "shipping", "returns"]},
    "note": {"type": "string", "maxLength": 12}},
    "required": ["priority", "queue", "note"], "additionalProperties": False}
VERDICT = {"type": "object", "properties": {"refund": {"type": "boolean"}, "days": {"type": "integer", "minimum": 1,
                                                                                     "maximum": 14}},
           "required": ["refund", "days"], "additionalProperties": False}
PROMPTS = [[{"role": "user", "content": f"Ticket {i}: my parcel is late, what now?"}] for i in range(5)]
MAX_NEW = 48


@pytest.fixture(autouse=True)
def _one_thread(single_thread):
    """Tiny models: one torch thread (see tests/conftest.py)."""


@pytest.fixture()
def renderer(tok):
    return ChatRenderer(tok, load_template("model", tok))


def test_constrained_replies_parse_and_validate_and_free_ones_are_untouched(tok, renderer):
    model = tiny_model(tok, seed=3)
    schemas = [TICKET, VERDICT, None, TICKET, VERDICT]
    out, stats = generate(model, renderer, PROMPTS, max_new_tokens=MAX_NEW, batch_size=3, schemas=schemas)
    free, _ = generate(model, renderer, PROMPTS, max_new_tokens=MAX_NEW, batch_size=3)
    assert stats.prompts == 5
    for gen, schema, plain in zip(out, schemas, free):
        if schema is None:  # unconstrained in a constrained batch: the reply it gets alone
            assert (gen.text, gen.finish) == (plain.text, plain.finish)
            continue
        assert gen.finish == "stop", gen.text  # the grammar ends the reply at its closing brace
        value = json.loads(gen.text)
        assert gen.text == json.dumps(value, ensure_ascii=False)  # exactly json.dumps's layout
        assert schema_valid(gen.text, schema) == (True, None)
        assert set(value) == set(schema["required"])
    assert not any(schema_valid(g.text, s)[0] for g, s in zip(free, schemas) if s is not None)  # random: ~never


def test_the_default_path_never_imports_llguidance(tok, renderer, monkeypatch):
    monkeypatch.setitem(sys.modules, "llguidance", None)  # any import of it now raises ImportError
    monkeypatch.setitem(sys.modules, "llguidance.hf", None)
    model = tiny_model(tok, seed=3)
    out, _ = generate(model, renderer, PROMPTS[:2], max_new_tokens=4)
    out_none, _ = generate(model, renderer, PROMPTS[:2], max_new_tokens=4, schemas=[None, None])
    assert [g.text for g in out] == [g.text for g in out_none]
    with pytest.raises(ImportError):
        generate(model, renderer, PROMPTS[:2], max_new_tokens=4, schemas=[None, TICKET])


def test_schemas_must_match_the_prompts(tok, renderer):
    with pytest.raises(ValueError, match=r"got 1 for 2 prompts; fix: pass one per prompt"):
        generate(tiny_model(tok, seed=3), renderer, PROMPTS[:2], max_new_tokens=4, schemas=[TICKET])


def _eval_set(folder: Path) -> dict:
    """An eval config with one set whose records carry bounded schemas (two of four) and one set without any."""
    (folder / "ticket.schema.json").write_text(json.dumps(TICKET), encoding="utf-8")
    (folder / "verdict.schema.json").write_text(json.dumps(VERDICT), encoding="utf-8")
    rows = [{"id": f"T{i}", "category": "late" if i % 2 else "refund", "messages": p,
             **({"schema": ["ticket", "verdict"][i % 2]} if i < 3 else {})} for i, p in enumerate(PROMPTS[:4])]
    (folder / "tickets.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (folder / "chat.jsonl").write_text("".join(json.dumps({"id": f"C{i}", "messages": p}) + "\n"
                                               for i, p in enumerate(PROMPTS[3:])), encoding="utf-8")
    return {"eval": {
        "sets": [{"name": "tickets", "path": str(folder / "tickets.jsonl"), "loss": False},
                 {"name": "chat", "path": str(folder / "chat.jsonl"), "loss": False}],
        "schemas": {"ticket": str(folder / "ticket.schema.json"), "verdict": str(folder / "verdict.schema.json")},
        "generation": {"max_new_tokens": MAX_NEW, "batch_size": 4}, "regression": {"ifeval": False}}}


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


def _eval(raw: dict, run_dir: Path) -> tuple[dict, list[str]]:
    logs: list[str] = []
    result = run(load_config(None, base=raw), run_dir, log=logs.append)
    return json.loads(result.metrics_path.read_text(encoding="utf-8")), logs


def _without_constrained(obj):
    """`obj` with every schema_validity_constrained / generation_constrained key dropped, at any depth."""
    if isinstance(obj, dict):
        return {k: _without_constrained(v) for k, v in obj.items()
                if k not in ("schema_validity_constrained", "generation_constrained")}
    if isinstance(obj, list):
        return [_without_constrained(v) for v in obj]
    return obj


def _free_results(metrics: dict) -> dict:
    """Everything an eval measured from the free replies (timings left out)."""
    out = {}
    for label, m in metrics["models"].items():
        sets = {name: {k: v for k, v in e.items() if k != "generation"} for name, e in m["sets"].items()}
        out[label] = {"sets": sets, "components": m["components"],
                      "finished_by_length": {n: e["generation"]["finished_by_length"] for n, e in m["sets"].items()}}
    out["comparisons"] = metrics["comparisons"]
    return out


def test_constrained_schema_reports_beside_the_free_validity_and_changes_nothing_else(fake_run, tmp_path):
    run_dir = fake_run()
    raw = _eval_set(tmp_path)
    off, _ = _eval(raw, run_dir)
    off_report = (run_dir / "eval" / "report.html").read_text(encoding="utf-8")
    off_card = (run_dir / "README.md").read_text(encoding="utf-8")
    off_files = {p.relative_to(run_dir / "eval" / "generations").as_posix(): p.read_bytes()
                 for p in (run_dir / "eval" / "generations").rglob("*.jsonl")}
    off_info = json.loads((run_dir / "run.json").read_text())["eval"]
    # off: no constrained key anywhere in the results, no constrained column, no constrained files
    assert _without_constrained(off) == off and "schema valid, constrained" not in off_report + off_card
    assert "schema_validity_constrained" not in off_info["candidates"]["final"]
    assert not any(".constrained." in name for name in off_files)

    raw["eval"]["constrained_schema"] = True
    on, logs = _eval(raw, run_dir)
    assert on["baseline_cache"]["hit"] is False  # the option is part of the cache key when on
    assert any(line == "final: generating 3 schema-constrained replies for tickets" for line in logs)
    for label in ("baseline", "final"):
        model = on["models"][label]
        assert "schema_validity_constrained" not in model["sets"]["chat"]["checks"]  # no schema items there
        free = model["sets"]["tickets"]["checks"]["schema_validity"]
        constrained = model["sets"]["tickets"]["checks"]["schema_validity_constrained"]
        assert set(constrained) == set(free) == {"n", "k", "rate", "ci95"}
        rows = _rows(run_dir / "eval" / "generations" / label / "tickets.constrained.jsonl")
        assert [r["id"] for r in rows] == ["T0", "T1", "T2"]
        finished = [r for r in rows if r["finish"] == "stop"]
        assert finished and all(r["schema_valid"] for r in finished)  # every reply that ends is valid
        for r in finished:
            assert schema_valid(r["output"], TICKET if r["schema"] == "ticket" else VERDICT) == (True, None)
        assert constrained["n"] == 3 and constrained["k"] == len(finished)
        assert model["sets"]["tickets"]["generation_constrained"]["finished_by_length"] == 3 - len(finished)
        assert constrained["rate"] == 1.0 and free["k"] == 0  # a random model's free replies are no JSON
        assert model["schema_validity_constrained"] == constrained  # pooled over the one set that has schemas

    # the free replies, their checks, the components and the combined score are exactly what they were
    assert _free_results(_without_constrained(on)) == _free_results(off)
    for name, data in off_files.items():
        assert (run_dir / "eval" / "generations" / name).read_bytes() == data, name

    # reported: report.html (summary and per-set tables), run.json's summary and the model card
    html = (run_dir / "eval" / "report.html").read_text(encoding="utf-8")
    assert html.count("<th>schema valid, constrained</th>") == 3  # summary + one per set
    assert "100.0% [" in html and "(n=3)" in html
    info = json.loads((run_dir / "run.json").read_text())["eval"]
    assert info["candidates"]["final"]["schema_validity_constrained"] == 1.0
    assert info["candidates"]["final"]["components"] == off_info["candidates"]["final"]["components"]
    assert info["candidates"]["final"]["score"] == off_info["candidates"]["final"]["score"]
    card = card_markdown(info)
    header, _, row = card.split("\n")[4:7]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert header.split(" | ")[5] == "schema valid, constrained" and cells[5] == "100.0%"

    # a cached baseline brings its constrained replies back with it
    again, logs = _eval(raw, run_dir)
    assert again["baseline_cache"]["hit"] is True and not any(x.startswith("baseline: generating") for x in logs)
    assert again["models"]["baseline"] == on["models"]["baseline"]
    assert (run_dir / "eval" / "generations" / "baseline" / "tickets.constrained.jsonl").is_file()


def test_the_cache_key_names_the_option_only_when_on(fake_run, tmp_path):
    run_dir = fake_run()
    raw = _eval_set(tmp_path)
    parts = {}
    for on in (False, True):
        raw["eval"]["constrained_schema"] = on
        cfg = load_config(None, base=raw).eval
        inp = Inputs(cfg, cfg.sets, {s.name: load_items(s, cfg.schemas) for s in cfg.sets}, {}, None, [], 512,
                     tmp_path / "out", print)
        parts[on] = key_parts(str(run_dir.parents[1] / "base"), inp, template="model", device="cpu")
    assert "constrained_schema" not in parts[False]["config"]  # off: the key of an eval before the option
    assert parts[True]["config"]["constrained_schema"] is True
    assert {k: v for k, v in parts[True]["config"].items() if k != "constrained_schema"} == parts[False]["config"]
    assert {k: v for k, v in parts[True].items() if k != "config"} == \
        {k: v for k, v in parts[False].items() if k != "config"}


def test_a_schema_llguidance_cannot_enforce_names_the_set_and_the_fix(tok, renderer, tmp_path):
    from sftpipe.conversation import Message
    from sftpipe.evaluate.items import EvalItem

    cfg = load_config(None, base={"eval": {"constrained_schema": True, "generation": {"max_new_tokens": 4}}}).eval
    lookbehind = {"type": "string", "pattern": "(?<=a)b"}  # valid JSON Schema; llguidance has no look-around
    item = EvalItem("x", "tickets", "c", [Message("user", "Hi")], None, schema=lookbehind, schema_name="odd")
    em = SimpleNamespace(label="final", model=tiny_model(tok, seed=3), renderer=renderer)
    inp = Inputs(cfg, [], {}, {}, None, [], 512, tmp_path, print)
    with pytest.raises(ConfigError, match=r"constrained_schema: a schema of set 'tickets' \(odd\) cannot be "
                                          r"enforced: .*look-around.*fix: simplify that schema, or set "
                                          r"eval.constrained_schema: false"):
        constrained_validity(em, inp, "tickets", [item], tmp_path)
