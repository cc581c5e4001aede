"""The lean log-prob path (completion positions only, chunked frozen output layer) gives TRL's own DPO loss,
metrics and gradients on the same batch."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig, get_peft_model
from trl import DPOTrainer

from sftpipe.config import load_config
from sftpipe.dataset import build_renderer
from sftpipe.dpo.encode import encode_pair
from sftpipe.dpo.pairs import parse_pair
from sftpipe.dpo.trainer import PreferenceTrainer, dpo_arguments
from sftpipe.models import tiny_model


@pytest.mark.parametrize("loss", ["sigmoid", "ipo"])
def test_lean_loss_metrics_and_gradients_equal_trls(tmp_path, loss):
    renderer = build_renderer(load_config())
    tok = renderer.tokenizer
    rows = [encode_pair(renderer, parse_pair({"prompt": f"What is {i} plus {i}?", "chosen": f"It is {2 * i}.",
                                              "rejected": f"Thanks for asking! Well, {i} plus {i} is {2 * i}."}))
            for i in range(4)]
    torch.manual_seed(0)
    model = get_peft_model(tiny_model(tok), LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM",
                                                       init_lora_weights=False))
    cfg = load_config(overrides=[f"dpo.loss={loss}", "dpo.batch_size=4", "dpo.precompute_ref_log_probs=false"])
    args = dpo_arguments(cfg.dpo, output_dir=str(tmp_path), lr=1e-3, precision="fp32", device="cpu",
                         has_eval=False, report_to=[])
    trainer = PreferenceTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok)
    assert trainer._lean is not None
    with torch.no_grad():  # move the policy away from its reference copy, so the loss is not ln 2
        for name, p in model.named_parameters():
            if ".default." in name:
                p.add_(0.05 * torch.randn_like(p))
    batch = trainer.data_collator(rows)
    results = {}
    for label, fn in (("lean", PreferenceTrainer._compute_loss), ("trl", DPOTrainer._compute_loss)):
        model.zero_grad()
        trainer._metrics["train"].clear()
        loss_value = fn(trainer, model, batch, False)
        loss_value.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results[label] = (loss_value.item(), dict(trainer._metrics["train"]), grads)
    (lean_loss, lean_m, lean_g), (trl_loss, trl_m, trl_g) = results["lean"], results["trl"]
    assert lean_loss == pytest.approx(trl_loss, rel=1e-5, abs=1e-5) and abs(lean_loss - 0.6931) > 1e-3
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen",
                "logps/rejected"):
        assert lean_m[key][0] == pytest.approx(trl_m[key][0], abs=1e-4), key
    assert lean_g.keys() == trl_g.keys() and lean_g
    for n in lean_g:
        torch.testing.assert_close(lean_g[n], trl_g[n], rtol=1e-4, atol=1e-6)
