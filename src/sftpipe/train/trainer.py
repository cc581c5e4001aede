"""transformers' `Trainer`, with one change: the loss is the mean over trained tokens, computed where they are.

`TrainedPositions` makes the output layer (lm_head) see only the hidden states of positions whose next token is
trained, through a forward pre-hook, so the [tokens x vocab] logits are never built for prompts or padding. The
hook runs inside the model's own forward, so DDP/FSDP wrapping, autocast and logit post-processing (soft-capping)
still apply. The loss is summed and divided by the trained-token count of the whole accumulated (and, under DDP,
all-process) batch, so gradient accumulation and N processes give the gradient of one big batch.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any

import torch
import torch.nn.functional as F
from transformers import Trainer, TrainingArguments

IGNORE_INDEX = -100


def shift_targets(labels: torch.Tensor) -> torch.Tensor:
    """Targets aligned with logits: position t predicts labels[t + 1]; the last position predicts nothing.

    >>> shift_targets(torch.tensor([[-100, 5, 6]])).tolist()
    [[5, 6, -100]]
    """
    return torch.cat([labels[:, 1:], labels.new_full((labels.shape[0], 1), IGNORE_INDEX)], dim=1)


class TrainedPositions:
    """A forward pre-hook on the output layer that keeps only the rows of `mask` (set per call with `select`)."""

    def __init__(self, model: torch.nn.Module):
        head = model.get_output_embeddings()
        if head is None:
            raise ValueError(f"{type(model).__name__} has no output embeddings (lm_head); fix: set "
                             "train.loss_positions=all")
        self._mask: torch.Tensor | None = None
        self._handle = head.register_forward_pre_hook(self._select)

    def _select(self, module, args):
        if self._mask is None:
            return None
        hidden = args[0]
        if hidden.shape[:2] != self._mask.shape:
            raise RuntimeError(f"lm_head got hidden states {tuple(hidden.shape)} for a mask "
                               f"{tuple(self._mask.shape)}; this model slices positions before its lm_head, "
                               "fix: set train.loss_positions=all")
        return (hidden[self._mask].unsqueeze(0), *args[1:])

    @contextlib.contextmanager
    def select(self, mask: torch.Tensor):
        """Within the block, the output layer computes logits only where `mask` ([batch, seq]) is True."""
        self._mask = mask
        try:
            yield
        finally:
            self._mask = None

    def remove(self) -> None:
        self._handle.remove()


def token_loss_sum(model, inputs: dict[str, Any], head: TrainedPositions | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of next-token cross-entropy over trained positions, number of trained positions) for one batch."""
    inputs = dict(inputs)
    targets = shift_targets(inputs.pop("labels"))
    mask = targets != IGNORE_INDEX
    with head.select(mask) if head is not None else contextlib.nullcontext():
        logits = model(**inputs).logits
    picked = targets[mask] if head is not None else targets.reshape(-1)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), picked.to(logits.device),
                           ignore_index=IGNORE_INDEX, reduction="sum")
    return loss, mask.sum()


class SftTrainer(Trainer):
    """Trainer with the trained-token loss, token throughput in the logs and a token-weighted eval loss."""

    def __init__(self, *args, loss_positions: str = "trained", **kwargs):
        super().__init__(*args, **kwargs)
        base = self.accelerator.unwrap_model(self.model)
        self.head = TrainedPositions(base) if loss_positions == "trained" else None
        # Our compute_loss divides by the accumulated trained-token count itself, so the Trainer must count it
        # for every step and must not divide by the accumulation steps again.
        self.model_accepts_loss_kwargs = True
        self.loss_is_scaled_for_ga = True
        self._trained_seen = torch.zeros((), dtype=torch.long)
        self._eval_totals = torch.zeros(2, dtype=torch.float64)
        self._session = (None, 0)  # (wall time of the first step this session, tokens seen then)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss_sum, n = token_loss_sum(model, inputs, self.head)
        if not model.training:
            self._eval_totals += torch.stack([loss_sum.detach().double().cpu(), n.double().cpu()])
            loss = loss_sum / n.clamp(min=1)
            return (loss, {}) if return_outputs else loss
        if self._session[0] is None:
            self._session = (time.perf_counter(), self.state.num_input_tokens_seen)
        self._trained_seen += n.cpu()
        if num_items_in_batch is None:  # no count for the step: fall back to this micro-batch's mean
            loss = loss_sum / n.clamp(min=1) / self.current_gradient_accumulation_steps
        else:
            loss = loss_sum / num_items_in_batch
            if self.args.average_tokens_across_devices and self.args.world_size > 1:
                loss = loss * self.args.world_size  # DDP averages gradients over processes
        return (loss, {}) if return_outputs else loss

    def evaluation_loop(self, dataloader, description, prediction_loss_only=None, ignore_keys=None,
                        metric_key_prefix="eval"):
        """Trainer's loop, with `<prefix>_loss` replaced by the mean over all trained eval tokens."""
        self._eval_totals.zero_()
        out = super().evaluation_loop(dataloader, description, prediction_loss_only=prediction_loss_only,
                                      ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)
        totals = self._eval_totals.to(self.args.device)
        if self.args.world_size > 1:
            totals = self.accelerator.reduce(totals, reduction="sum")
        if totals[1] > 0:
            out.metrics[f"{metric_key_prefix}_loss"] = (totals[0] / totals[1]).item()
        out.metrics[f"{metric_key_prefix}_trained_tokens"] = int(totals[1].item())
        return out

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:  # a training log: every process gets here together (the loss was just gathered)
            seen = self._trained_seen.to(self.args.device)
            if self.args.world_size > 1:
                seen = self.accelerator.reduce(seen, reduction="sum")
            logs["trained_tokens_seen"] = int(seen.item())
            t0, tokens0 = self._session
            if t0 is not None:
                elapsed = max(time.perf_counter() - t0, 1e-9)
                logs["tokens_per_second"] = round((self.state.num_input_tokens_seen - tokens0) / elapsed, 2)
        super().log(logs, start_time)


def training_arguments(tcfg, *, output_dir: str, lr: float, precision: str, device: str, batching: str,
                       has_eval: bool, report_to: list[str], **overrides) -> TrainingArguments:
    """TrainingArguments for a `train` config section (one micro-batch item per loader batch)."""
    save_steps = tcfg.save_steps or tcfg.eval_steps
    kwargs: dict[str, Any] = dict(
        output_dir=output_dir, learning_rate=lr, lr_scheduler_type=tcfg.scheduler, warmup_steps=tcfg.warmup_ratio,
        num_train_epochs=tcfg.epochs, max_steps=tcfg.max_steps, per_device_train_batch_size=1,
        per_device_eval_batch_size=1, gradient_accumulation_steps=tcfg.grad_accum, weight_decay=tcfg.weight_decay,
        max_grad_norm=tcfg.max_grad_norm, seed=tcfg.seed, data_seed=tcfg.seed,
        activation_checkpointing=tcfg.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if tcfg.gradient_checkpointing else None,
        bf16=precision == "bf16", fp16=precision == "fp16", use_cpu=device == "cpu",
        eval_strategy="steps" if has_eval else "no", eval_steps=tcfg.eval_steps, save_strategy="steps",
        save_steps=save_steps, save_total_limit=tcfg.save_total_limit, load_best_model_at_end=has_eval,
        metric_for_best_model="eval_loss" if has_eval else None, greater_is_better=False if has_eval else None,
        logging_steps=tcfg.logging_steps, logging_first_step=True, report_to=report_to, disable_tqdm=True,
        remove_unused_columns=False, prediction_loss_only=True, average_tokens_across_devices=True,
        include_num_input_tokens_seen="non_padding" if batching == "padded" else "all",
        dataloader_num_workers=tcfg.dataloader_workers,
        ddp_backend="gloo" if device == "cpu" and int(os.environ.get("WORLD_SIZE", "1")) > 1 else None,
        ddp_find_unused_parameters=False, fsdp=tcfg.fsdp, fsdp_config=tcfg.fsdp_config or None,
    )
    kwargs.update(overrides)
    return TrainingArguments(**kwargs)
