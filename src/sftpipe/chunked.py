"""The output layer (lm_head) and the log-probability of each row's target, a chunk of rows at a time.

`head_logprobs(head, hidden, targets)` is `log_softmax(head(hidden))[row, target]` per row (0 where the target is
`IGNORE_INDEX`), in fp32, with at most `chunk` rows of [rows x vocab] logits alive at once. SFT's token loss is
`-head_logprobs(...).sum()` (`sftpipe.train.trainer`); DPO's completion log-probs are `head_logprobs(...)` summed
per sequence (`sftpipe.dpo.logps`).

Gradients: for a frozen output layer (LoRA, a reference pass), each row's gradient for the hidden states is formed
in the forward pass while its chunk of logits is at hand (d log p_t / d logits = onehot(t) - softmax), so nothing is
recomputed and no logits are kept; backward only scales each row by its incoming gradient. A trained output layer
(full fine-tuning, tied embeddings) goes through plain autograd on the given rows, as it always has.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .labels import IGNORE_INDEX

CHUNK = 256  # rows of logits per chunk


def _chunk_logits(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(fp32 logits, logsumexp, kept rows, targets made safe to gather) for one chunk."""
    logits = (hidden.to(weight.dtype) @ weight.t()).float()
    keep = targets != IGNORE_INDEX
    return logits, torch.logsumexp(logits, dim=-1), keep, torch.where(keep, targets, 0)


def _dlogits(logits: torch.Tensor, lse: torch.Tensor, keep: torch.Tensor, safe: torch.Tensor) -> torch.Tensor:
    """d log p_target / d logits = onehot(target) - softmax, zero on ignored rows (overwrites `logits`)."""
    grad = logits.sub_(lse[:, None]).exp_().neg_()
    grad[torch.arange(len(safe), device=safe.device), safe] += 1
    return grad.mul_(keep[:, None])


class _FrozenHeadLogProbs(torch.autograd.Function):
    """log p(target | hidden @ weight.T) per row, `chunk` rows at a time, `weight` frozen."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk):
        out = torch.zeros(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        grad = torch.zeros_like(hidden) if ctx.needs_input_grad[0] else None
        for s in range(0, hidden.shape[0], chunk):
            logits, lse, keep, safe = _chunk_logits(hidden[s:s + chunk], weight, targets[s:s + chunk])
            out[s:s + chunk] = (logits.gather(1, safe[:, None])[:, 0] - lse) * keep
            if grad is not None:
                grad[s:s + chunk] = (_dlogits(logits, lse, keep, safe).to(weight.dtype) @ weight).to(hidden.dtype)
        ctx.save_for_backward(grad if grad is not None else hidden.new_empty(0))
        return out

    @staticmethod
    def backward(ctx, grad_out):
        (grad,) = ctx.saved_tensors
        return grad * grad_out[:, None].to(grad.dtype), None, None, None


def head_logprobs(head: torch.nn.Linear, hidden: torch.Tensor, targets: torch.Tensor,
                  chunk: int = CHUNK) -> torch.Tensor:
    """log p(target) per row of `head(hidden)` (a bias-free Linear), fp32, 0 where the target is IGNORE_INDEX; in
    the autocast dtype when autocast is on, as `head(hidden)` would be."""
    device = hidden.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else head.weight.dtype
    with torch.autocast(device_type=device, enabled=False):
        if head.weight.requires_grad and torch.is_grad_enabled():
            logits = (hidden.to(dtype) @ head.weight.to(dtype).t()).float()
            return -F.cross_entropy(logits, targets, reduction="none", ignore_index=IGNORE_INDEX)
        if not torch.is_grad_enabled():  # a Function's needs_input_grad ignores no_grad: keep nothing for backward
            hidden = hidden.detach()
        return _FrozenHeadLogProbs.apply(hidden, head.weight.detach().to(dtype), targets, chunk)
