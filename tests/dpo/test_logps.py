"""The lean path (one packed row per pair, completion positions only, chunked frozen output layer) gives TRL's own
DPO loss, metrics and gradients, computed by TRL on its two rows per pair, for a LoRA and a full-weights policy."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig, get_peft_model
from trl import DPOTrainer
from trl.trainer.dpo_trainer import DataCollatorForPreference

from sftpipe.config import load_config
from sftpipe.dpo.encode import encode_pair
from sftpipe.dpo.logps import lean_head, pair_logps
from sftpipe.dpo.pairs import parse_pair
from sftpipe.dpo.shared_prefix import SharedPrefixCollator
from sftpipe.dpo.trainer import PreferenceTrainer, dpo_arguments
from sftpipe.models import tiny_model

from .conftest import renderer_for


def _rows(renderer, n=4):
    return [encode_pair(renderer, parse_pair({
        "prompt": f"What is {i} plus {i}?" + " Please be quick." * i, "chosen": f"It is {2 * i}.",
        "rejected": f"Thanks for asking! Well, {i} plus {i} is {2 * i}." + " Anything else?" * (3 - i)}))
        for i in range(n)]


@pytest.mark.parametrize("loss,lora,sft", [("sigmoid", True, 0), ("ipo", True, 0), ("sigmoid", False, 0),
                                          ("sigmoid", True, 0.5)])
def test_lean_loss_metrics_and_gradients_equal_trls(tmp_path, loss, lora, sft):
    renderer = renderer_for(load_config())
    tok = renderer.tokenizer
    rows = _rows(renderer)
    torch.manual_seed(0)
    model = tiny_model(tok)
    if lora:
        model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM",
                                                 init_lora_weights=False))
    cfg = load_config(overrides=[f"dpo.loss={loss}", f"dpo.sft_weight={sft}", "dpo.batch_size=4",
                                 "dpo.precompute_ref_log_probs=false"])
    args = dpo_arguments(cfg.dpo, output_dir=str(tmp_path), lr=1e-3, precision="fp32", device="cpu",
                         has_eval=False, report_to=[])
    ref = None if lora else tiny_model(tok)
    trainer = PreferenceTrainer(model=model, ref_model=ref, args=args, train_dataset=Dataset.from_list(rows),
                                processing_class=tok)
    assert trainer._lean is not None and isinstance(trainer.data_collator, SharedPrefixCollator)
    assert trainer.loss_types == [loss] + (["sft"] if sft else [])
    with torch.no_grad():  # move the policy away from its reference, so the loss is not ln 2
        for name, p in model.named_parameters():
            if ".default." in name or not lora:
                p.add_(0.05 * torch.randn_like(p))
    batches = {"lean": trainer.data_collator(rows),
               "trl": DataCollatorForPreference(pad_token_id=tok.pad_token_id)(rows)}
    assert batches["lean"]["input_ids"].numel() < batches["trl"]["input_ids"].numel()  # each prompt once
    results = {}
    for label, fn in (("lean", PreferenceTrainer._compute_loss), ("trl", DPOTrainer._compute_loss)):
        model.zero_grad()
        trainer._metrics["train"].clear()
        loss_value = fn(trainer, model, batches[label], False)
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
        torch.testing.assert_close(lean_g[n], trl_g[n], rtol=1e-4, atol=1e-5)


def test_a_packed_pair_scores_each_reply_as_its_own_row_would():
    renderer = renderer_for(load_config())
    tok = renderer.tokenizer
    rows = _rows(renderer, 3)
    torch.manual_seed(0)
    model = tiny_model(tok).eval()
    backbone, head = lean_head(model)
    with torch.no_grad():
        packed = pair_logps(backbone, head, SharedPrefixCollator(tok.pad_token_id)(rows))
        alone = []
        for side in ("chosen_ids", "rejected_ids"):
            for r in rows:
                ids = torch.tensor([r["prompt_ids"] + r[side]])
                logp = model(input_ids=ids).logits[0, :-1].log_softmax(-1)
                targets = ids[0, 1:]
                alone.append(logp.gather(1, targets[:, None])[len(r["prompt_ids"]) - 1:].sum())
    torch.testing.assert_close(packed, torch.stack(alone), rtol=1e-5, atol=1e-4)
    # the mask is what keeps the rejected reply from reading the chosen one: without it the scores change
    batch = SharedPrefixCollator(tok.pad_token_id)(rows)
    batch["pair_attention"] = batch["pair_attention"] | torch.ones_like(batch["pair_attention"]).tril()
    with torch.no_grad():
        assert not torch.allclose(pair_logps(backbone, head, batch)[3:], packed[3:], atol=1e-3)
