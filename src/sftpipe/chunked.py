"""The output layer (lm_head) and the log-probability of each row's target, a chunk of rows at a time.

`head_logprobs(head, hidden, targets)` is `log_softmax(head(hidden))[row, target]` per row (0 where the target is
`IGNORE_INDEX`), in fp32, with at most `chunk` rows of [rows x vocab] logits alive at once. SFT's token loss is
`-head_logprobs(...).sum()` (`sftpipe.train.trainer`); DPO's completion log-probs are `head_logprobs(...)` summed
per sequence (`sftpipe.dpo.logps`).

Gradients: for the hidden states, each row's gradient is formed in the forward pass while its chunk of logits is
at hand (d log p_t / d logits = onehot(t) - softmax), so nothing is recomputed and no logits are kept; backward only
scales each row by its incoming gradient. When the output layer's weight is trained too, its gradient depends on
those incoming gradients, so backward recomputes each chunk's logits once and forms both gradients there.
"""

from __future__ import annotations

import torch

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


class _ChunkedLogProbs(torch.autograd.Function):
    """log p(target | hidden @ weight.T) per row, `chunk` rows at a time."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk):
        out = torch.zeros(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        train_weight = ctx.needs_input_grad[1]
        grad = torch.zeros_like(hidden) if ctx.needs_input_grad[0] and not train_weight else None
        for s in range(0, hidden.shape[0], chunk):
            logits, lse, keep, safe = _chunk_logits(hidden[s:s + chunk], weight, targets[s:s + chunk])
            out[s:s + chunk] = (logits.gather(1, safe[:, None])[:, 0] - lse) * keep
            if grad is not None:
                grad[s:s + chunk] = (_dlogits(logits, lse, keep, safe).to(weight.dtype) @ weight).to(hidden.dtype)
        ctx.chunk = chunk
        if train_weight:
            ctx.save_for_backward(hidden, weight, targets)
        else:
            ctx.save_for_backward(grad if grad is not None else hidden.new_empty(0))
        return out

    @staticmethod
    def backward(ctx, grad_out):
        if len(ctx.saved_tensors) == 1:  # hidden's gradient per row, formed in forward
            (grad,) = ctx.saved_tensors
            return grad * grad_out[:, None].to(grad.dtype), None, None, None
        hidden, weight, targets = ctx.saved_tensors
        grad_hidden = torch.zeros_like(hidden) if ctx.needs_input_grad[0] else None
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
        for s in range(0, hidden.shape[0], ctx.chunk):
            h = hidden[s:s + ctx.chunk]
            logits, lse, keep, safe = _chunk_logits(h, weight, targets[s:s + ctx.chunk])
            g = _dlogits(logits, lse, keep, safe).mul_(grad_out[s:s + ctx.chunk, None].float())
            grad_weight += g.t() @ h.float()
            if grad_hidden is not None:
                grad_hidden[s:s + ctx.chunk] = (g.to(weight.dtype) @ weight).to(hidden.dtype)
        return grad_hidden, grad_weight.to(weight.dtype), None, None


def head_logprobs(head: torch.nn.Linear, hidden: torch.Tensor, targets: torch.Tensor,
                  chunk: int = CHUNK) -> torch.Tensor:
    """log p(target) per row of `head(hidden)` (a bias-free Linear), fp32, 0 where the target is IGNORE_INDEX; in
    the autocast dtype when autocast is on, as `head(hidden)` would be."""
    device = hidden.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else head.weight.dtype
    weight = head.weight.to(dtype)
    if not torch.is_grad_enabled():  # a Function's needs_input_grad ignores no_grad: keep nothing for backward
        hidden, weight = hidden.detach(), weight.detach()
    with torch.autocast(device_type=device, enabled=False):
        return _ChunkedLogProbs.apply(hidden, weight, targets, chunk)
