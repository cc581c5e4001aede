"""LoRA dropout that costs less on a CPU: a 1-byte mask, a cheaper random draw, and the input in the autocast dtype.

peft's LoRA dropout is `nn.Dropout` on the adapter input. On a CPU under bf16 autocast it was ~17% of a SmolLM2-135M
training step: `bernoulli_` draws one 32-bit random number per element, the mask is kept as floats, and the dropout
runs in fp32 on an input that `lora_A` casts to bf16 right after. `LeanDropout` casts first, draws 16 random bits
per element (four per 64-bit draw), and keeps a bool mask for backward. Training loads it on CPUs only.
"""

from __future__ import annotations

import torch

BITS = 15  # random bits per element: the drop probability is rounded to a multiple of 2**-15


def keep_mask(shape: torch.Size, p: float, device: torch.device | str = "cpu") -> tuple[torch.Tensor, float]:
    """A bool mask of `shape` that keeps each element with probability 1 - p', and p' (p rounded to 2**-15).

    >>> torch.manual_seed(0) and None
    >>> mask, p_used = keep_mask(torch.Size([1000, 100]), 0.05)
    >>> round(p_used, 5), round(1 - mask.float().mean().item(), 2)
    (0.04999, 0.05)
    """
    n = shape.numel()
    threshold = round(p * 2 ** BITS)
    # random_() fills int64 with 63 random bits; every 16-bit lane has >= 15 of them, so keep the low 15
    lanes = torch.empty((n + 3) // 4, dtype=torch.int64, device=device).random_().view(torch.int16)[:n]
    return (lanes & (2 ** BITS - 1)).ge(threshold).view(shape), threshold / 2 ** BITS


class _Masked(torch.autograd.Function):
    """x * keep * scale, saving only the bool mask for backward."""

    @staticmethod
    def forward(ctx, x, keep, scale):
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return x * keep * scale

    @staticmethod
    def backward(ctx, grad):
        (keep,) = ctx.saved_tensors
        return grad * keep * ctx.scale, None, None


class LeanDropout(torch.nn.Dropout):
    """nn.Dropout with the same keep probability (to 2**-15) and scaling, for LoRA inputs on a CPU: casts the
    input to the autocast dtype when autocast is on (which the next matmul would do anyway), draws a cheap mask
    and keeps it as 1 byte per element."""

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        if x.device.type != "cpu":
            return super().forward(x)
        if torch.is_autocast_enabled("cpu") and x.dtype == torch.float32:
            x = x.to(torch.get_autocast_dtype("cpu"))
        keep, p_used = keep_mask(x.shape, self.p, x.device)
        return _Masked.apply(x, keep, 1 / (1 - p_used))


def lean_dropout(model: torch.nn.Module, *, autocast: bool) -> int:
    """Swap every LoRA `nn.Dropout` of `model` (peft's `lora_dropout`) for `LeanDropout`; with `autocast` (the
    model always runs under it), also let LoRA layers take their input as it comes, where peft would cast it to
    the fp32 adapter dtype only for autocast to cast it back at `lora_A`. Returns how many were swapped."""
    swapped = 0
    for module in model.modules():
        drops = getattr(module, "lora_dropout", None)
        if drops is None:
            continue
        if autocast:
            module.cast_input_dtype_enabled = False
        for name, drop in list(drops.items()):
            if type(drop) is torch.nn.Dropout and drop.p > 0:
                drops[name] = LeanDropout(drop.p)
                swapped += 1
    return swapped
