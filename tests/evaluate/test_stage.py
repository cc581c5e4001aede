"""`sftpipe eval` end to end on a fake run (tiny random models in the run layout) and the Harbor demo data."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sftpipe.config import load_config
from sftpipe.demo.policy import check_reply as harbor_check
from sftpipe.errors import ConfigError, ModelError
from sftpipe.config.evaluate import GenerationConfig, RegressionConfig
from sftpipe.evaluate.items import category_counts
from sftpipe.chat_client import EndpointError
from sftpipe.evaluate.load import from_objects
from sftpipe.evaluate.regression import deltas, general_items, run_regression
from sftpipe.evaluate.report import CARD_END, CARD_START, update_card
from sftpipe.stages.eval import run
from sftpipe.stats import frequency_deciles, win_rate
from sftpipe.models import tiny_model

ROOT = Path(__file__).resolve().parents[2]


def _eval_cfg(demo: Path, **extra) -> dict:
    return {"eval": {
        "sets": [{"name": "compliance", "path": str(demo / "eval" / "compliance.jsonl"), "limit": 4, "sample": "first",
                  "schema": "offer", "json_when": "expect.refund_offer",
                  "expected": {"amount": "expect.amount", "type": "expect.refund_type"}},
                 {"name": "redteam", "path": str(demo / "eval" / "redteam.jsonl"), "limit": 2, "loss": False}],
        "schemas": {"offer": str(demo / "policy" / "refund_offer.schema.json")},
        "rules": str(demo / "policy" / "rules.yaml"),
        "generation": {"max_new_tokens": 6, "batch_size": 4},
        "regression": {"ifeval": False}, **extra}}


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


def test_eval_writes_metrics_report_generations_card_and_judges(fake_run, demo_data, judge_server):
    train = str(demo_data / "raw" / "harbor_export.jsonl")
    run_dir = fake_run(train_files=[train])

    def longer(prompt):  # a consistent judge: the longer reply wins
        if "## Reply A" not in prompt:
            return "tie"  # the stage's reachability check before any model runs
        a, b = judge_server.replies(prompt)
        return "A" if len(a) > len(b) else "B" if len(b) > len(a) else "tie"

    with judge_server(longer, max_requests=13) as srv:
        cfg = load_config(None, base=_eval_cfg(demo_data, judge={"enabled": True, "url": srv.url, "n_boot": 200}))
        result = run(cfg, run_dir)
    assert len(srv.requests) == 1 + 12  # the check, then 6 prompts in both orders
    out = run_dir / "eval"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(result.metrics))
    assert list(metrics["models"]) == ["baseline", "final"] and metrics["baseline"]["ref"].endswith("base")
    final = metrics["models"]["final"]
    assert set(final["sets"]["compliance"]) == {"loss", "checks", "generation"}
    assert set(final["sets"]["redteam"]) == {"checks", "generation"}  # loss: false
    assert final["sets"]["compliance"]["loss"]["overall"]["examples"] == 4

    # generations: one row per record, checks recomputable from the saved output
    compliance = _rows(demo_data / "eval" / "compliance.jsonl")[:4]
    for label in ("final", "baseline"):
        rows = _rows(out / "generations" / label / "compliance.jsonl")
        assert [r["id"] for r in rows] == [r["id"] for r in compliance]
        for row, rec in zip(rows, compliance):
            assert row["violations"] == harbor_check(row["output"], rec["facts"], rec["category"])
            assert (row["schema_valid"] is None) == (not rec["expect"]["refund_offer"])
    checks = final["sets"]["compliance"]["checks"]
    rows = _rows(out / "generations" / "final" / "compliance.jsonl")
    assert checks["policy"]["violation_rate"]["k"] == sum(bool(r["violations"]) for r in rows)

    # judge: the longer reply wins in both orders, so the win rate follows from the saved outputs
    outcomes = []
    for name in ("compliance", "redteam"):
        cand = _rows(out / "generations" / "final" / f"{name}.jsonl")
        base = _rows(out / "generations" / "baseline" / f"{name}.jsonl")
        outcomes += [1.0 if len(c["output"]) > len(b["output"]) else 0.0 if len(c["output"]) < len(b["output"])
                     else 0.5 for c, b in zip(cand, base)]
    judge = metrics["comparisons"]["final"]["judge"]
    assert judge["n"] == 6 and judge["win_rate"] == round(win_rate(outcomes), 4) and judge["inconsistent"] == 0
    assert len(_rows(out / "judge" / "final.jsonl")) == 6
    assert metrics["comparisons"]["final"]["components"]["win_rate"] == judge["win_rate"]

    # frequency deciles come from the training file named in run.json
    counts = category_counts([train], "category")
    eval_cats = [r["category"] for r in compliance + _rows(demo_data / "eval" / "redteam.jsonl")[:2]]
    assert metrics["frequency_deciles"]["deciles"] == frequency_deciles(counts, eval_cats)
    assert metrics["frequency_deciles"]["deciles"]["order_status"] == 1  # the most frequent issue type
    assert metrics["frequency_deciles"]["source"].startswith("training files")

    # report: renders, and every image and file it links exists next to it
    html = (out / "report.html").read_text()
    assert "Evaluation of" in html and "Judge: final vs baseline" in html
    links = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert any(x.endswith(".png") for x in links)
    assert all((out / x).is_file() for x in links), [x for x in links if not (out / x).is_file()]
    assert f"{100 * judge['win_rate']:.1f}%" in html

    # run.json and the model card
    info = json.loads((run_dir / "run.json").read_text())
    assert info["eval"]["candidates"]["final"]["score"] == metrics["comparisons"]["final"]["score"]["score"]
    assert info["mode"] == "full"  # the rest of run.json is kept
    card = (run_dir / "README.md").read_text()
    assert card.startswith("---\nlicense") and card.count(CARD_START) == 1 and "## Evaluation" in card


def test_select_scores_every_checkpoint_and_records_why(fake_run, demo_data, tmp_path):
    run_dir = fake_run(checkpoints=(5, 10))
    (run_dir / "checkpoints" / "checkpoint-7").mkdir()  # killed mid-write: no completion marker, never scored
    (run_dir / "checkpoints" / "checkpoint-7" / "config.json").write_text("{}")
    human = tmp_path / "human.csv"
    human.write_text("prompt_id,checkpoint,tone,policy,correctness\n"
                     "CP0001,checkpoint-5,2,2,2\nCP0001,checkpoint-10,5,5,4\nCP0001,demo,1,1,1\n", encoding="utf-8")
    base = _eval_cfg(demo_data, human=str(human),
                     weights={"human_tone": 1, "human_policy": 1, "human_correctness": 1, "policy": 0})
    base["eval"]["sets"] = base["eval"]["sets"][:1]
    base["eval"]["sets"][0].update(limit=2, loss=False)
    bars: dict[str, list[int]] = {}

    def tracker(label: str, total: int):  # what the CLI's progress bars are given: a total, then advances
        bars[label] = [total, 0]
        return lambda n: bars[label].__setitem__(1, bars[label][1] + n)

    result = run(load_config(None, base=base), run_dir, select=True,
                 against=str(run_dir / "checkpoints" / "checkpoint-5"), progress=tracker)
    assert len(bars) == 4 and all(total == done == 2 for total, done in bars.values()), bars  # base + 3 models
    sel = result.metrics["selection"]
    assert list(sel["scores"]) == ["checkpoint-5", "checkpoint-10", "final"]
    assert sel["scores"] == {"checkpoint-5": 0.25, "checkpoint-10": round((1 + 1 + 0.75) / 3, 4), "final": 0.0}
    assert result.best == sel["best"] == "checkpoint-10" and "checkpoint-10" in sel["reason"]
    assert result.metrics["baseline"]["ref"].endswith("checkpoint-5")
    info = json.loads((run_dir / "run.json").read_text())
    assert info["best_checkpoint"] == "checkpoint-10" and info["eval"]["selection"]["best"] == "checkpoint-10"
    assert "Selected checkpoint: **checkpoint-10**" in (run_dir / "README.md").read_text()
    assert (run_dir / "eval" / "plots" / "checkpoints.png").is_file()


def test_select_on_a_lora_run_trained_by_sftpipe(tok, tmp_path, demo_data):
    """The real run layout: `sftpipe train` writes a LoRA adapter, checkpoints and the card; eval scores them."""
    import torch

    from sftpipe.runs.card import EVAL_START
    from sftpipe.stages.train import run as train

    base = tmp_path / "base"
    tiny_model(tok).save_pretrained(base)
    tok.save_pretrained(base)
    noise = {r["id"]: r["noise"] for r in _rows(demo_data / "raw" / "noise_manifest.jsonl")}
    clean = [r for r in _rows(demo_data / "raw" / "harbor_export.jsonl") if not noise[r["id"]]][:16]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in clean), encoding="utf-8")
    raw = _eval_cfg(demo_data, weights={"policy": 1.0, "schema_validity": 1.0})
    raw["eval"]["sets"] = raw["eval"]["sets"][:1]
    raw["eval"]["sets"][0]["limit"] = 2
    cfg = load_config(None, base=raw, overrides=[
        "name=lr", f"model.name={base}", f"data.train={tmp_path / 'train.jsonl'}",
        f"train.output_dir={tmp_path / 'runs'}", "train.report_to=none", "train.precision=fp32", "train.max_steps=4",
        "train.batch_size=4", "train.grad_accum=1", "train.eval_steps=2", "render.max_length=384"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the train tests do: a tiny model on a shared machine
    try:
        run_dir = train(cfg, progress=False).run_dir
        result = run(cfg, run_dir, select=True)
    finally:
        torch.set_num_threads(threads)
    assert list(result.metrics["selection"]["scores"]) == ["checkpoint-2", "checkpoint-4", "final"]
    assert result.metrics["baseline"]["ref"] == str(base)
    info = json.loads((run_dir / "run.json").read_text())
    assert info["mode"] == "lora" and info["status"] == "complete"  # train's record is kept
    assert info["best_checkpoint"] == result.best == info["eval"]["selection"]["best"]
    card = (run_dir / "README.md").read_text()
    assert EVAL_START in card and "Not evaluated yet" not in card and result.best in card
    assert result.metrics["frequency_deciles"]["source"].startswith("training files")


def test_regression_ifeval_and_general_nll_from_objects(tok, demo_data):
    em = from_objects("m", tiny_model(tok, seed=2), tok)

    cfg = RegressionConfig(ifeval_subset=2, ifeval_max_new_tokens=4,
                           general=str(demo_data / "general" / "general_instructions.jsonl"), general_limit=3)
    general = general_items(cfg)
    assert len(general) == 3 and all(it.target for it in general)
    out, rows = run_regression(em, cfg, GenerationConfig(batch_size=2), general, max_length=512,
                               tokens_per_batch=4096)
    assert out["ifeval"]["n_prompts"] == 2 and len(rows) == 2
    assert 0 <= out["ifeval"]["prompt_level_strict"] <= 1 and out["general_nll"]["examples"] == 3
    d = deltas({"ifeval": {"prompt_level_strict": 0.5, "instruction_level_strict": 0.6},
                "general_nll": {"loss": 1.0}},
               {"ifeval": {"prompt_level_strict": 0.25, "instruction_level_strict": 0.7},
                "general_nll": {"loss": 1.2}})
    assert d == {"ifeval_prompt_level_strict": 0.25, "ifeval_instruction_level_strict": -0.1,
                 "general_nll": -0.2, "general_retention": 1.0}


def test_update_card_replaces_its_own_section(tmp_path):
    (tmp_path / "README.md").write_text("# card\n\nintro\n", encoding="utf-8")
    s = {"metrics": "eval/metrics.json", "report": "eval/report.html", "baseline": "b",
         "candidates": {"final": {"score": 0.5, "components": {"policy": 0.9}, "deltas": {}}}}
    update_card(tmp_path, s)
    s["candidates"]["final"]["score"] = 0.75
    update_card(tmp_path, s)
    text = (tmp_path / "README.md").read_text()
    assert text.startswith("# card\n\nintro\n") and text.count(CARD_START) == text.count(CARD_END) == 1
    assert "| final | 0.75 |" in text and "| final | 0.5 |" not in text and "90.0%" in text


def test_update_card_lets_train_render_its_own_cards(tmp_path, monkeypatch):
    from sftpipe.runs import card

    calls = []
    monkeypatch.setattr(card, "update_eval", lambda run_dir, scores: calls.append((run_dir, scores)))
    (tmp_path / "README.md").write_text(f"---\nbase_model: x\n---\n{card.EVAL_START}\nNot evaluated yet\n"
                                        f"{card.EVAL_END}\n", encoding="utf-8")
    s = {"candidates": {}}
    update_card(tmp_path, s)
    assert calls == [(tmp_path, s)] and CARD_START not in (tmp_path / "README.md").read_text()


def test_eval_needs_a_run_and_valid_weights(tmp_path, demo_data):
    with pytest.raises(ModelError, match="run.json"):
        run(load_config(None, base=_eval_cfg(demo_data)), tmp_path)
    with pytest.raises(ConfigError) as err:
        load_config(None, base={"eval": {"weights": {"vibes": 1}, "sets": [{"name": "a", "path": "x"},
                                                                          {"name": "a", "path": "y"}]}})
    assert "vibes" in str(err.value)


def test_unreachable_judge_fails_before_any_model_runs(fake_run, demo_data, judge_server):
    run_dir = fake_run()
    with judge_server(lambda prompt: "A") as srv:
        url = srv.url  # closed again: nothing listens there now
    cfg = load_config(None, base=_eval_cfg(demo_data, judge={"enabled": True, "url": url, "retries": 0,
                                                             "timeout_s": 2}))
    with pytest.raises(EndpointError, match="eval.judge.url"):
        run(cfg, run_dir)
    assert not (run_dir / "eval").exists()


def test_cli_eval_runs_and_prints_the_summary(fake_run, demo_data, tmp_path):
    run_dir = fake_run()
    cfg = _eval_cfg(demo_data)
    cfg["eval"]["sets"] = cfg["eval"]["sets"][1:]
    (tmp_path / "sftpipe.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    res = subprocess.run([sys.executable, "-m", "sftpipe.cli", "eval", "-c", str(tmp_path / "sftpipe.yaml"),
                          "--run", str(run_dir), "--max-new-tokens", "3"], capture_output=True, text=True,
                         timeout=300, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "report:" in res.stdout and "[eval] final: generating 2 replies for redteam" in res.stderr
    metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())
    assert metrics["config"]["generation"]["max_new_tokens"] == 3
    assert all(r["new_tokens"] <= 3 for r in _rows(run_dir / "eval" / "generations" / "final" / "redteam.jsonl"))


def test_eval_without_a_config_takes_the_one_recorded_in_run_json(fake_run):
    run = fake_run()
    from sftpipe.stages.eval import config_for

    cfg, run_dir = config_for(None, run, ["eval.generation.max_new_tokens=3"], {"eval.judge.model": "j"})
    assert run_dir == run and cfg.name == "demo" and cfg.render.max_length == 512
    assert cfg.eval.generation.max_new_tokens == 3 and cfg.eval.judge.model == "j"
