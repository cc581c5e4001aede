"""The Trainer pieces on a tiny model: the trained-positions loss, which parameters move, gradient accumulation."""

from __future__ import annotations

import torch

from sftpipe.collate import PackedCollator, PaddedCollator
from sftpipe.readers import read_conversations
from sftpipe.dataset import build_renderer
from sftpipe.train.data import ItemCollator, ItemDataset, make_items
from sftpipe.train.dropout import LeanDropout
from sftpipe.train.load import load_for_training
from sftpipe.train.trainer import SftTrainer, TrainedPositions, token_loss_sum, training_arguments


def _examples(cfg, renderer, n=None):
    from sftpipe.dataset import build_examples

    convs = read_conversations(cfg.data.train).conversations[:n]
    return build_examples(convs, renderer, max_length=cfg.render.max_length)[0]


def _model(cfg, renderer):
    return load_for_training(cfg, renderer.tokenizer, renderer.added_tokens, device="cpu", precision="fp32")


def _train(cfg, model, items, tmp_path, *, steps, accum=1):
    args = training_arguments(cfg.train, output_dir=str(tmp_path / "ckpt"), lr=cfg.train.lr,
                              precision=cfg.train.precision, device="cpu", batching="padded", has_eval=False,
                              report_to=[], max_steps=steps,
                              gradient_accumulation_steps=accum, save_strategy="no",
                              train_sampling_strategy="sequential")
    trainer = SftTrainer(model=model, args=args, train_dataset=ItemDataset(items),
                         data_collator=ItemCollator("padded", 2), loss_positions=cfg.train.loss_positions)
    trainer.train()
    return trainer


def test_trained_positions_loss_equals_the_models_own_loss(make_cfg):
    cfg = make_cfg()
    renderer = build_renderer(cfg.model, cfg.template, cfg.render)
    model = _model(cfg, renderer).eval()
    rows = [{"input_ids": e.input_ids, "labels": e.labels} for e in _examples(cfg, renderer, 6)]
    head = TrainedPositions(model)
    for batch in (PaddedCollator(2)(rows), PackedCollator()(rows)):
        with torch.no_grad():
            ours, n = token_loss_sum(model, batch, head)
            full, n_all = token_loss_sum(model, batch, None)
            reference = model(**batch).loss  # transformers' own shifted, masked mean
        assert n == n_all == sum(sum(x != -100 for x in r["labels"][1:]) for r in rows)
        torch.testing.assert_close(ours / n, reference, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(full, ours, rtol=1e-5, atol=1e-4)


def test_chunked_loss_gives_the_same_loss_and_gradients(make_cfg, monkeypatch):
    import sftpipe.train.trainer as trainer_module

    cfg = make_cfg()
    renderer = build_renderer(cfg.model, cfg.template, cfg.render)
    model = _model(cfg, renderer).eval()  # LoRA: the output layer is frozen, so the loss is chunked
    rows = [{"input_ids": e.input_ids, "labels": e.labels} for e in _examples(cfg, renderer, 6)]
    batch = PaddedCollator(2)(rows)
    head = TrainedPositions(model)
    assert head.chunked
    monkeypatch.setattr(trainer_module, "LOSS_CHUNK", 7)  # several chunks, the last one short
    results = []
    for chunked in (True, False):
        head.chunked = chunked
        model.zero_grad()
        loss, n = token_loss_sum(model, batch, head)
        loss.backward()
        results.append((loss.detach(), n, {k: p.grad.clone() for k, p in model.named_parameters() if p.requires_grad}))
    (chunked_loss, n1, g1), (whole_loss, n2, g2) = results
    assert n1 == n2 > 7
    torch.testing.assert_close(chunked_loss, whole_loss, rtol=1e-5, atol=1e-4)
    assert g1.keys() == g2.keys() and any(g.abs().sum() > 0 for g in g1.values())
    for k in g1:
        torch.testing.assert_close(g1[k], g2[k], rtol=1e-4, atol=1e-6)


def _snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _check_moved(model, before):
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable, "nothing to train"
    unchanged = [n for n in trainable if torch.equal(before[n], dict(model.named_parameters())[n])]
    moved_frozen = [n for n, p in model.named_parameters() if n not in trainable and not torch.equal(before[n], p)]
    assert not unchanged, f"trainable parameters that did not change: {unchanged[:5]}"
    assert not moved_frozen, f"frozen parameters that changed: {moved_frozen[:5]}"
    return trainable


def test_lora_changes_every_adapter_weight_and_no_base_weight(make_cfg, tmp_path):
    cfg = make_cfg()
    renderer = build_renderer(cfg.model, cfg.template, cfg.render)
    model = _model(cfg, renderer)
    items, _ = make_items(_examples(cfg, renderer), batching="padded", batch_size=4, max_length=128)
    before = _snapshot(model)
    _train(cfg, model, items, tmp_path, steps=3)
    trainable = _check_moved(model, before)
    assert all("lora_" in n for n in trainable)
    targets = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in trainable}
    assert targets == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


def test_full_mode_changes_every_weight(make_cfg, tmp_path):
    cfg = make_cfg("train.mode=full", "train.lr=1e-3")
    renderer = build_renderer(cfg.model, cfg.template, cfg.render)
    model = _model(cfg, renderer)
    items, _ = make_items(_examples(cfg, renderer), batching="padded", batch_size=4, max_length=128)
    before = _snapshot(model)
    _train(cfg, model, items, tmp_path, steps=2)
    assert len(_check_moved(model, before)) == len(before)


def test_added_template_tokens_train_only_their_embedding_rows(make_cfg, tmp_path):
    cfg = make_cfg("template.name=llama3")
    renderer = build_renderer(cfg.model, cfg.template, cfg.render)
    assert renderer.added_tokens  # SmolLM2's tokenizer lacks llama3's control tokens
    model = _model(cfg, renderer)
    assert model.get_input_embeddings().weight.shape[0] == len(renderer.tokenizer)
    items, _ = make_items(_examples(cfg, renderer), batching="padded", batch_size=4, max_length=128)
    before = _snapshot(model)
    _train(cfg, model, items, tmp_path, steps=3)
    trainable = _check_moved(model, before)
    token_params = [n for n in trainable if "trainable_tokens" in n]
    assert token_params  # the new rows are trained ...
    embed = model.get_input_embeddings()
    new_ids = [renderer.tokenizer.convert_tokens_to_ids(t) for t in renderer.added_tokens]
    weights = embed.get_merged_weights(["default"]) if hasattr(embed, "get_merged_weights") else embed.weight
    base = before[next(n for n in before if n.endswith("embed_tokens.base_layer.weight")
                       or n.endswith("embed_tokens.token_adapter.base_layer.weight"))]
    keep = torch.ones(base.shape[0], dtype=torch.bool)
    keep[new_ids] = False
    assert torch.equal(weights[keep], base[keep])  # ... and no other row moves
    assert not torch.equal(weights[new_ids], base[new_ids])


def test_gradient_accumulation_matches_one_big_batch(make_cfg, tmp_path):
    cfg = make_cfg("lora.dropout=0")
    renderer = build_renderer(cfg.model, cfg.template, cfg.render)
    examples = _examples(cfg, renderer, 8)
    trained = [e.n_trained for e in examples]
    assert len(set(trained)) > 1  # unequal micro-batches: a per-micro-batch mean would give a different gradient
    rows = [{"input_ids": e.input_ids, "labels": e.labels} for e in examples]
    big = [{"rows": rows[i:i + 4]} for i in (0, 4)]            # 2 steps of one batch of 4
    small = [{"rows": rows[i:i + 2]} for i in (0, 2, 4, 6)]    # 2 steps of 2 micro-batches of 2
    torch.manual_seed(0)
    a = _model(cfg, renderer)
    torch.manual_seed(0)
    b = _model(cfg, renderer)
    ta = _train(cfg, a, big, tmp_path / "a", steps=2, accum=1)
    tb = _train(cfg, b, small, tmp_path / "b", steps=2, accum=2)
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    for name, p in pa.items():
        if p.requires_grad:
            torch.testing.assert_close(p, pb[name], rtol=1e-4, atol=1e-6)
    la = [m["loss"] for m in ta.state.log_history if "loss" in m]
    lb = [m["loss"] for m in tb.state.log_history if "loss" in m]
    assert len(la) == len(lb) == 2 and max(abs(x - y) for x, y in zip(la, lb)) < 1e-4


def test_bf16_lora_keeps_frozen_linears_half_and_everything_trained_fp32(make_cfg, tmp_path):
    cfg = make_cfg("train.precision=bf16", "lora.dropout=0.1")
    renderer = build_renderer(cfg.model, cfg.template, cfg.render)
    model = load_for_training(cfg, renderer.tokenizer, [], device="cpu", precision="bf16")
    dtypes = {n: p.dtype for n, p in model.named_parameters()}
    assert all(d == torch.float32 for n, d in dtypes.items() if "lora_" in n or "norm" in n or "embed" in n)
    assert all(d == torch.bfloat16 for n, d in dtypes.items() if n.endswith("base_layer.weight"))
    drops = [m for m in model.modules() if isinstance(m, LeanDropout)]
    assert len(drops) == 14 and all(d.p == 0.1 for d in drops)  # 7 projections x 2 layers
    assert all(not m.cast_input_dtype_enabled for m in model.modules() if hasattr(m, "lora_dropout"))
    x = torch.ones(256, 512, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.dtype) or t, lambda t: t):
        y = drops[0].train()(x)
    assert saved == [torch.bool] and abs((y == 0).float().mean().item() - 0.1) < 0.005
    scale = 1 / (1 - round(0.1 * 2 ** 15) / 2 ** 15)  # p rounded to 2**-15, the mask's resolution
    assert torch.equal(y[y != 0], torch.full_like(y[y != 0], scale))
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # d(x * keep * scale)/dx with x = 1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert drops[0](x).dtype == torch.bfloat16  # cast once here instead of twice around the dropout
    items, _ = make_items(_examples(cfg, renderer), batching="padded", batch_size=4, max_length=128)
    trainer = _train(cfg, model, items, tmp_path, steps=3)
    losses = [m["loss"] for m in trainer.state.log_history if "loss" in m]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))


def test_load_doctests():
    import doctest

    import sftpipe.train.load

    result = doctest.testmod(sftpipe.train.load)
    assert result.attempted >= 2 and result.failed == 0


def test_auto_precision_is_fp32_when_torch_is_held_below_avx512():
    import os
    import subprocess
    import sys

    code = "from sftpipe.train.load import choose_precision; print(choose_precision('auto', 'cpu'))"
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "fp32"  # whatever this CPU's flags say: bf16 would be emulated


def test_loading_the_best_checkpoint_warns_of_no_tied_weight(make_cfg):
    """The output layer tied to the embeddings is saved once, so transformers called it missing on every run that
    keeps the best checkpoint."""
    import logging

    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    from sftpipe.stages.train import run
    cfg = make_cfg("train.mode=full", "train.max_steps=2", "train.eval_steps=1", eval=True)
    model = AutoModelForCausalLM.from_pretrained(cfg.model.name)
    assert model.lm_head.weight is model.model.embed_tokens.weight  # tied, as SmolLM2's are
    warnings: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: warnings.append(record.getMessage())
    logger = hf_logging.get_logger("transformers.trainer")
    logger.addHandler(handler)
    try:
        result = run(cfg, progress=False)
    finally:
        logger.removeHandler(handler)
    assert result.best_checkpoint is not None
    assert not [w for w in warnings if "missing keys" in w], warnings
