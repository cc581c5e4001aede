"""Completion log-probabilities from the completion positions only, the output layer in chunks (CPU-lean).

TRL 1.16's fused LM head falls back, on devices without Triton, to several whole-tile passes per vocabulary chunk
(the log-prob plus entropy, mean logit and top-1 statistics it logs), which dominates a DPO step of a small model on
a CPU. Here the backbone runs once over the packed pairs (`sftpipe.dpo.shared_prefix`), only the hidden states that
predict a completion token reach the output layer, and the log-probs are computed 256 rows at a time by the kernel
SFT's loss uses too (`sftpipe.chunked`), so no [positions x vocab] logits outlive their chunk: for a frozen output
layer (LoRA, or any reference pass) each chunk's gradient for the hidden states is formed on the spot; a trained one
(full fine-tuning, tied embeddings) goes through autograd on those rows only.
"""

from __future__ import annotations

import torch

from ..chunked import CHUNK, head_logprobs


def lean_head(model) -> tuple[torch.nn.Module, torch.nn.Linear] | None:
    """(backbone, output layer) of a causal LM (or a PEFT model around one) when the lean path applies, else None:
    a bias-free linear output layer with no soft-capping or logit scaling, on a model that uses SDPA attention
    (the packed pairs need its 4-D boolean mask)."""
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = lm.get_output_embeddings()
    cfg = lm.config.get_text_config()
    if (type(head) is not torch.nn.Linear or head.bias is not None
            or getattr(cfg, "_attn_implementation", None) != "sdpa"
            or getattr(cfg, "final_logit_softcapping", None) or getattr(cfg, "logit_scale", None)
            or getattr(cfg, "logits_scaling", None) or not hasattr(lm, "base_model")):
        return None
    return lm.base_model, head


def pair_logps(backbone, head: torch.nn.Linear, batch: dict[str, torch.Tensor], chunk: int = CHUNK) -> torch.Tensor:
    """Summed log-prob of every pair's chosen and rejected completion, shape [2 x pairs] (chosen first), fp32, from
    a `SharedPrefixCollator` batch."""
    hidden = backbone(input_ids=batch["input_ids"], attention_mask=batch["pair_attention"],
                      position_ids=batch["position_ids"], use_cache=False).last_hidden_state
    rows = batch["score_row"]
    picked = hidden[rows, batch["score_from"]]
    targets = batch["input_ids"][rows, batch["score_to"]]
    lp = head_logprobs(head, picked, targets, chunk)
    slots = 2 * batch["input_ids"].shape[0]
    return torch.zeros(slots, dtype=torch.float32, device=lp.device).index_add(0, batch["score_slot"], lp)
