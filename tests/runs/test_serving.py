"""How a run is served (`sftpipe.runs.serving`): a run trained with `render.reasoning: empty` on replies that carry
reasoning is evaluated and served with exactly its training render; references resolve to a run and checkpoint or
fail naming the fix; the render section of an older run.json still reads; a changed template is refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from sftpipe.config import load_config
from sftpipe.conversation import Conversation, Message
from sftpipe.dataset import build_examples, build_renderer
from sftpipe.errors import ModelError, TemplateError
from sftpipe.evaluate import loss as loss_mod
from sftpipe.evaluate.items import EvalItem
from sftpipe.evaluate.load import load_run_model
from sftpipe.models import load_tokenizer, tiny_model
from sftpipe.runs import RunInfo, RunRef, check_template, is_run, load_tokenizer as load_run_tokenizer, read_info
from sftpipe.runs import render_config, resolve
from sftpipe.config.serve import ServeConfig
from sftpipe.serve.app import create_app
from sftpipe.serve.load import load_served

QWEN3 = Path(__file__).parents[1] / "assets" / "templates" / "qwen3-8b.jinja"  # a final reply shows its reasoning


def _conversation(i: int) -> Conversation:
    """A question and a reply that opens with its reasoning (a think block, as reasoning models write it)."""
    return Conversation([Message("user", f"What is {i} plus {i}?"),
                         Message("assistant", f"<think>\nAdd {i} to {i}.\n</think>\n\n{2 * i}.")], {"id": str(i)})


@pytest.fixture(scope="module")
def empty_run(tmp_path_factory):
    """(config, run folder): a LoRA run on a tiny random Llama with Qwen3's template and render.reasoning empty."""
    root = tmp_path_factory.mktemp("reasoning-run")
    tok = load_tokenizer("smollm2-135m-instruct")
    tiny_model(tok, seed=5).save_pretrained(root / "base")
    tok.save_pretrained(root / "base")
    rows = [{"id": i, "messages": [m.to_template() for m in _conversation(i).messages]} for i in range(8)]
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = load_config(overrides=[
        "name=think", f"model.name={root / 'base'}", f"data.train={root / 'train.jsonl'}",
        f"train.output_dir={root / 'runs'}", f"template.name={QWEN3}", "render.reasoning=empty",
        "train.report_to=none", "train.precision=fp32", "train.mode=lora", "train.max_steps=1", "train.batch_size=4",
        "train.grad_accum=1", "render.max_length=128", "train.parity_examples=4"])
    from sftpipe.stages.train import run as train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return cfg, train(cfg, progress=False).run_dir
    finally:
        torch.set_num_threads(threads)


def _training_render(cfg, convs: list[Conversation]):
    """What training rendered: the config's renderer (base tokenizer, template file, render section)."""
    renderer = build_renderer(cfg.model, cfg.template, cfg.render)
    assert renderer.reasoning == "empty"
    examples, rejects, _ = build_examples(convs, renderer, max_length=cfg.render.max_length, truncation="truncate")
    assert not rejects and len(examples) == len(convs)
    return examples


def test_eval_renders_a_reasoning_empty_run_as_it_trained(empty_run, monkeypatch, single_thread):
    cfg, run_dir = empty_run
    em = load_run_model(run_dir)
    assert em.renderer.reasoning == "empty" and em.renderer.train_on == cfg.render.train_on
    convs = [_conversation(i) for i in (3, 11)]
    want = _training_render(cfg, convs)
    assert "Add 3 to 3." not in want[0].text and "<think>\n\n</think>\n\n6." in want[0].text
    seen = []

    def token_nll(model, examples, **kw):  # records the examples held-out loss scores
        seen.extend(examples)
        return [(0.0, e.n_trained) for e in examples]

    monkeypatch.setattr(loss_mod, "token_nll", token_nll)
    items = [EvalItem(c.meta["id"], "heldout", "math", c.messages[:-1], c.messages[-1].content) for c in convs]
    loss_mod.heldout_loss(em.model, em.renderer, items, {}, max_length=cfg.render.max_length)
    assert [e.input_ids for e in seen] == [e.input_ids for e in want]
    assert [e.labels for e in seen] == [e.labels for e in want]


def test_serve_renders_a_reasoning_empty_run_as_it_trained(empty_run, single_thread):
    cfg, run_dir = empty_run
    conv = _conversation(4)
    (want,) = _training_render(cfg, [conv])
    app, served = create_app(run_dir, ServeConfig())
    assert served.renderer.reasoning == "empty"
    messages = [{"role": m.role, "content": m.content} for m in conv.messages]
    with TestClient(app) as client:
        full = client.post("/v1/render", json={"messages": messages, "add_generation_prompt": False}).json()
        prompt = client.post("/v1/render", json={"messages": messages[:1]}).json()
    assert full["prompt"] == want.text and full["token_ids"] == want.input_ids
    assert want.input_ids[: len(prompt["token_ids"])] == prompt["token_ids"]  # the reply follows the served prompt


def test_resolve_names_the_run_and_checkpoint_or_the_fix(tmp_path):
    run = tmp_path / "runs" / "r"
    (run / "checkpoints" / "checkpoint-5").mkdir(parents=True)
    (run / "run.json").write_text("{}")
    assert resolve(run) == RunRef(run) and resolve(str(run)).checkpoint is None
    assert resolve(run / "checkpoints" / "checkpoint-5") == RunRef(run, "checkpoint-5")
    assert is_run(run) and not is_run(run / "checkpoints" / "checkpoint-5") and not is_run(tmp_path)
    for ref in (tmp_path, tmp_path / "checkpoints" / "checkpoint-5", "smollm2-135m-instruct"):
        with pytest.raises(ModelError, match=r"neither a run folder .* fix: pass runs/<name>"):
            resolve(ref)


def test_render_config_reads_older_run_json_and_refuses_a_bad_value():
    def info(render: dict) -> RunInfo:
        return RunInfo(config={"name": "r", "render": render}, base_model="b", mode="lora")

    assert render_config(info({"reasoning": "empty", "train_on": "last_assistant"})).reasoning == "empty"
    old = render_config(info({"max_length": 64, "batching": "auto"}))  # wave 1: no reasoning, a dropped key
    assert (old.max_length, old.reasoning, old.train_on) == (64, "keep", "all_assistant")
    with pytest.raises(ModelError, match="render.reasoning.*fix: re-run `sftpipe train`"):
        render_config(info({"reasoning": "sometimes"}))


def test_a_changed_template_is_refused_by_the_check_eval_and_serve(empty_run, tmp_path):
    _, run_dir = empty_run
    assert check_template(run_dir, load_run_tokenizer(run_dir), read_info(run_dir)) == \
        read_info(run_dir).template.sha256
    edited = tmp_path / "edited"
    shutil.copytree(run_dir, edited)
    config = json.loads((edited / "tokenizer_config.json").read_text())
    config["chat_template"] = config["chat_template"].replace("<think>", "<thinking>")
    (edited / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(TemplateError, match="differs from the one run.json records.*fix: restore the run's "
                                            "tokenizer_config.json"):
        check_template(edited, load_run_tokenizer(edited), read_info(edited))
    recorded = tmp_path / "recorded"  # run.json (not hashed by the completion marker) names another template
    shutil.copytree(run_dir, recorded)
    info = json.loads((recorded / "run.json").read_text())
    info["template"]["sha256"] = "0" * 64
    (recorded / "run.json").write_text(json.dumps(info))
    for load in (load_run_model, load_served):
        with pytest.raises(TemplateError, match="differs from the one run.json records.*fix:"):
            load(recorded)
