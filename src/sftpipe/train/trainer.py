"""transformers' `Trainer`, with one change: the loss is the mean over trained tokens, computed where they are.

`TrainedPositions` makes the output layer (lm_head) see only the hidden states of positions whose next token is
trained, through a forward pre-hook, so the [tokens x vocab] logits are never built for prompts or padding. The
hook runs inside the model's own forward, so DDP/FSDP wrapping, autocast and logit post-processing (soft-capping)
still apply. When the lm_head is frozen and has no post-processing (LoRA on most models), the logits are built
in chunks inside the loss (`sftpipe.chunked`, shared with DPO), each chunk's gradient computed on the spot, so peak
memory holds one chunk of them.
The loss is summed and divided by the trained-token count of the whole accumulated (and, under DDP, all-process)
batch, so gradient accumulation and N processes give the gradient of one big batch.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any

import torch
import torch.nn.functional as F
from transformers import Trainer, TrainingArguments

from ..chunked import head_logprobs
from ..labels import IGNORE_INDEX
from .parallel import shards_parameters


def shift_targets(labels: torch.Tensor) -> torch.Tensor:
    """Targets aligned with logits: position t predicts labels[t + 1]; the last position predicts nothing.

    >>> shift_targets(torch.tensor([[-100, 5, 6]])).tolist()
    [[5, 6, -100]]
    """
    return torch.cat([labels[:, 1:], labels.new_full((labels.shape[0], 1), IGNORE_INDEX)], dim=1)


def trained_index(labels: torch.Tensor) -> torch.Tensor:
    """Flat positions (over batch x seq) whose next token is trained; computed by the collator on the CPU, so the
    GPU never waits for it.

    >>> trained_index(torch.tensor([[-100, -100, 5, 6], [-100, 7, -100, -100]])).tolist()
    [1, 2, 4]
    """
    return (shift_targets(labels).reshape(-1) != IGNORE_INDEX).nonzero().squeeze(1)


LOSS_CHUNK = 256  # trained positions per lm_head + cross-entropy chunk


def chunked_cross_entropy(head: torch.nn.Linear, hidden: torch.Tensor, targets: torch.Tensor,
                          chunk: int = LOSS_CHUNK) -> torch.Tensor:
    """Sum of cross-entropy of `head(hidden)` (a bias-free Linear) against `targets`, at most `chunk` rows of
    logits at a time (`sftpipe.chunked`); in the autocast dtype when autocast is on, as `head(hidden)` would be."""
    return -head_logprobs(head, hidden, targets, chunk).sum()


class TrainedPositions:
    """A forward pre-hook on the output layer that keeps only the hidden states at `index` (set per call).

    When the output layer is frozen and the model does nothing to its logits after it (no soft-capping), the hook
    instead hands the output layer nothing and keeps the selected hidden states, and the loss computes the logits
    itself in chunks (`chunked_cross_entropy`): the same loss without the whole [positions x vocab] logits. That
    reads the layer's weight after the forward, so not with `whole_head` False (FSDP, ZeRO-3: the weight is
    sharded there), where the selected positions go through the layer inside the forward.
    """

    def __init__(self, model: torch.nn.Module, whole_head: bool = True):
        head = model.get_output_embeddings()
        if head is None:
            raise ValueError(f"{type(model).__name__} has no output embeddings (lm_head); fix: set "
                             "train.loss_positions=all")
        self.head = head
        self.chunked = (whole_head and type(head) is torch.nn.Linear and head.bias is None
                        and not head.weight.requires_grad
                        and not getattr(model.config, "final_logit_softcapping", None))
        self.hidden: torch.Tensor | None = None
        self._index: torch.Tensor | None = None
        self._positions = 0
        self._handle = head.register_forward_pre_hook(self._select)

    def _select(self, module, args):
        if self._index is None:
            return None
        hidden = args[0]
        if hidden.shape[0] * hidden.shape[1] != self._positions:
            raise RuntimeError(f"lm_head got hidden states {tuple(hidden.shape)} for {self._positions} positions; "
                               "this model slices positions before its lm_head, fix: set train.loss_positions=all")
        selected = hidden.flatten(0, 1).index_select(0, self._index).unsqueeze(0)
        if self.chunked:
            self.hidden = selected
            return (selected[:, :0], *args[1:])
        return (selected, *args[1:])

    @contextlib.contextmanager
    def select(self, index: torch.Tensor, positions: int):
        """Within the block, the output layer computes logits only at flat `index` of `positions` (batch x seq)."""
        self._index, self._positions = index, positions
        try:
            yield
        finally:
            self._index = None

    def remove(self) -> None:
        self._handle.remove()


def token_loss_sum(model, inputs: dict[str, Any], head: TrainedPositions | None
                   ) -> tuple[torch.Tensor, int | torch.Tensor]:
    """(sum of next-token cross-entropy over trained positions, number of trained positions) for one batch.

    Uses the collator's `trained_index` when present (no device sync), else derives it from the labels."""
    inputs = dict(inputs)
    labels = inputs.pop("labels")
    index = inputs.pop("trained_index", None)
    targets = shift_targets(labels).reshape(-1)
    if head is None:
        logits = model(**inputs).logits
        picked, n = targets, (targets != IGNORE_INDEX).sum()
    else:
        index = trained_index(labels) if index is None else index.to(labels.device)
        with head.select(index, targets.numel()):
            logits = model(**inputs).logits
        picked, n = targets.index_select(0, index), index.numel()
        if head.chunked:
            hidden, head.hidden = head.hidden, None
            return chunked_cross_entropy(head.head, hidden[0], picked.to(hidden.device), LOSS_CHUNK), n
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), picked.to(logits.device),
                           ignore_index=IGNORE_INDEX, reduction="sum")
    return loss, n


class SftTrainer(Trainer):
    """Trainer with the trained-token loss, token throughput in the logs and a token-weighted eval loss."""

    def __init__(self, *args, loss_positions: str = "trained", example_groups: list[str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        base = self.accelerator.unwrap_model(self.model)
        self.sharded = shards_parameters(self)  # why the output layer is not whole after the forward, if it is not
        self.head = TrainedPositions(base, whole_head=self.sharded is None) if loss_positions == "trained" else None
        # Our compute_loss divides by the accumulated trained-token count itself, so the Trainer must count it
        # for every step and must not divide by the accumulation steps again.
        self.model_accepts_loss_kwargs = True
        self.loss_is_scaled_for_ga = True
        self._trained_seen = torch.zeros((), dtype=torch.long)
        self._trained_before: int | None = None  # trained tokens of the run before a resume (from its logs)
        self._eval_totals = torch.zeros(2, dtype=torch.float64)
        self._session = (None, 0)  # (wall time of the first step this session, tokens seen then)
        # examples trained on per group (the record's category): counted per micro-batch from its example_index
        self._group_names = sorted(set(example_groups or []))
        self._group_of = torch.tensor([self._group_names.index(g) for g in example_groups or []], dtype=torch.long)
        self._group_seen = torch.zeros(len(self._group_names), dtype=torch.long)
        self._groups_before: dict[str, int] | None = None  # counts of the run before a resume (from its logs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        examples = inputs.pop("example_index", None)
        if model.training and examples is not None and len(self._group_names):
            self._group_seen += torch.bincount(self._group_of[examples.cpu()], minlength=len(self._group_names))
        loss_sum, n = token_loss_sum(model, inputs, self.head)
        if not model.training:
            self._eval_totals += torch.tensor([loss_sum.item(), float(n)], dtype=torch.float64)
            loss = loss_sum / max(n, 1)
            return (loss, {}) if return_outputs else loss
        if self._session[0] is None:
            self._session = (time.perf_counter(), self.state.num_input_tokens_seen)
        self._trained_seen += n if isinstance(n, int) else n.cpu()  # an int unless loss_positions=all
        if num_items_in_batch is None:  # no count for the step: fall back to this micro-batch's mean
            loss = loss_sum / max(n, 1) / self.current_gradient_accumulation_steps
        else:
            loss = loss_sum / num_items_in_batch
            if self.args.average_tokens_across_devices and self.args.world_size > 1:
                loss = loss * self.args.world_size  # DDP averages gradients over processes
        return (loss, {}) if return_outputs else loss

    def _issue_warnings_after_load(self, load_result) -> None:
        """Trainer's warnings on loading the best checkpoint, less the weights tied to another: a tied output layer
        is saved once, with the embeddings, so it is missing from every checkpoint by design."""
        from accelerate.utils import find_tied_parameters

        tied = {name for group in find_tied_parameters(self.model) for name in group}
        missing = [k for k in load_result.missing_keys if k not in tied]
        if len(missing) < len(load_result.missing_keys):
            self.model.tie_weights()
        super()._issue_warnings_after_load(type(load_result)(missing, load_result.unexpected_keys))

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
            if self._trained_before is None:  # on resume, the restored logs carry the count so far
                self._trained_before = next((int(m["trained_tokens_seen"]) for m in reversed(self.state.log_history)
                                             if "trained_tokens_seen" in m), 0)
            logs["trained_tokens_seen"] = self._trained_before + int(seen.item())
            logs.update({f"examples_seen/{g}": n for g, n in self.examples_seen().items()})
            t0, tokens0 = self._session
            if t0 is not None:
                elapsed = max(time.perf_counter() - t0, 1e-9)
                logs["tokens_per_second"] = round((self.state.num_input_tokens_seen - tokens0) / elapsed, 2)
        super().log(logs, start_time)


    def examples_seen(self) -> dict[str, int]:
        """Examples trained on so far per group, over all processes and (after a resume) the run before it.
        Every process must call it (it reduces across them)."""
        seen = self._group_seen.to(self.args.device)
        if self.args.world_size > 1:
            seen = self.accelerator.reduce(seen, reduction="sum")
        if self._groups_before is None:  # on resume, the restored logs carry the counts so far
            last = next((m for m in reversed(self.state.log_history) if "trained_tokens_seen" in m), {})
            self._groups_before = {g: int(last.get(f"examples_seen/{g}", 0)) for g in self._group_names}
        return {g: self._groups_before[g] + int(n) for g, n in zip(self._group_names, seen.tolist())}


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
        ddp_find_unused_parameters=False, fsdp=tcfg.fsdp, fsdp_config=dict(tcfg.fsdp_config) or None,  # a copy:
        # transformers writes its defaults into it
    )
    kwargs.update(overrides)
    fields = TrainingArguments.__dataclass_fields__
    if "activation_checkpointing" not in fields:  # transformers < 5.20 names it gradient_checkpointing
        kwargs["gradient_checkpointing"] = kwargs.pop("activation_checkpointing")
        kwargs["gradient_checkpointing_kwargs"] = kwargs.pop("activation_checkpointing_kwargs")
    return TrainingArguments(**{k: v for k, v in kwargs.items() if k in fields})
