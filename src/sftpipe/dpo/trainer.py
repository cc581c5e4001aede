"""TRL's `DPOTrainer`, fed sftpipe's tokenization, with reference log-probs cached and length-grouped batches.

What TRL does as it is: the collator (prompt + completion rows, chosen half then rejected half), the fused LM head
that scores only completion positions, the loss (`dpo.loss`), the metrics (rewards, margins, accuracies, log-probs)
and the reference adapter copy for a pretrained adapter. What changes:
- `_prepare_dataset` passes pre-tokenized rows through (`prompt_ids`, `chosen_ids`, `rejected_ids` from
  `sftpipe.dpo.encode`), where TRL would re-render them with `apply_chat_template`;
- `_precompute_ref_logps` keeps the reference log-probs in a safetensors file keyed by the tokenized data and the
  reference weights' sha256, so a re-run or a --resume does not recompute them;
- the training sampler groups pairs of similar length into micro-batches (seeded, the same after a resume);
- for the sigmoid / ipo / hinge losses, a pair is one row (`sftpipe.dpo.shared_prefix`: the prompt once, each reply
  masked from the other) and log-probs come from `sftpipe.dpo.logps` (completion positions only, a frozen output layer
  in chunks) instead of TRL's two rows per pair and fused head, whose CPU fallback makes several whole passes per
  vocabulary chunk for statistics it only logs; the loss and the reward metrics are TRL's formulas (checked equal to
  TRL's `_compute_loss` in the tests); entropy / logits / token-accuracy logs are left out.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import contextlib

import torch
import torch.nn.functional as F
from torch.utils.data import Sampler
from trl import DPOConfig, DPOTrainer
from trl.trainer.utils import use_adapter

from .logps import lean_head, pair_logps
from .shared_prefix import SharedPrefixCollator

REF_COLUMNS = ("ref_chosen_logps", "ref_rejected_logps")
LORA_LR, FULL_LR = 1e-5, 1e-6  # see sftpipe.config.DpoConfig
LEAN_LOSSES = ("sigmoid", "ipo", "hinge")


def learning_rate(dcfg, adapter: bool) -> float:
    """dpo.lr, else 1e-5 for an adapter and 1e-6 for full weights."""
    return dcfg.lr if dcfg.lr is not None else (LORA_LR if adapter else FULL_LR)


def quietly(fn, *args):
    """Call `fn` without TRL's and datasets' tqdm bars (the library never writes to the console)."""
    import os

    from datasets.utils.logging import disable_progress_bar, enable_progress_bar, is_progress_bar_enabled

    before, was = os.environ.get("TQDM_DISABLE"), is_progress_bar_enabled()
    os.environ["TQDM_DISABLE"] = "1"
    disable_progress_bar()
    try:
        return fn(*args)
    finally:
        if before is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = before
        if was:
            enable_progress_bar()


class GroupedSampler(Sampler):
    """Indices in micro-batches of `batch_size` pairs of similar length, the batches in a seeded shuffled order
    (per epoch). The permutation depends only on (seed, epoch), so a resumed run sees the same batches.

    >>> list(GroupedSampler([5, 1, 9, 2], batch_size=2, seed=0))
    [1, 3, 0, 2]
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int):
        self.lengths, self.batch_size, self.seed, self.epoch = list(lengths), batch_size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        rng = random.Random(self.seed * 1_000_003 + self.epoch)
        order = sorted(range(len(self.lengths)), key=lambda i: (self.lengths[i], rng.random()))
        batches = [order[s:s + self.batch_size] for s in range(0, len(order), self.batch_size)]
        rng.shuffle(batches)
        return iter([i for b in batches for i in b])


def _lean_loss(args, model) -> bool:
    """Whether the run's loss is one the lean path computes: TRL's sigmoid / ipo / hinge formulas (plus its `sft`
    term), no label smoothing, LD weighting, f-divergence or router auxiliary loss (mixture-of-experts models keep
    TRL's path)."""
    return (args is not None and args.loss_type[0] in LEAN_LOSSES and args.loss_type[1:] in ([], ["sft"])
            and not args.label_smoothing and args.ld_alpha is None and not args.use_weighting
            and args.f_divergence_type == "reverse_kl"
            and not hasattr(model.config.get_text_config(), "output_router_logits"))


class PreferenceTrainer(DPOTrainer):
    """DPOTrainer on pre-tokenized pairs (one row each on the lean path), with a reference log-prob cache and
    length-grouped batches."""

    def __init__(self, *args, ref_cache: dict[str, Path] | None = None, group_by_length: bool = True,
                 lean: bool = True, **kwargs):
        self._ref_cache = ref_cache or {}
        self._group = group_by_length
        model = kwargs.get("model", args[0] if args else None)
        lean = lean and not isinstance(model, str) and kwargs.get("data_collator") is None
        self._lean = lean_head(model) if lean and _lean_loss(kwargs.get("args"), model) else None
        if self._lean is not None:
            tok = kwargs.get("processing_class")
            tok = getattr(tok, "tokenizer", tok)
            kwargs["data_collator"] = SharedPrefixCollator(tok.pad_token_id if tok.pad_token_id is not None
                                                           else tok.eos_token_id)
        super().__init__(*args, **kwargs)

    # -- lean log-probs: one row per pair, completion positions only ---------------------------------------------
    def _ref_context(self):
        unwrapped = self.accelerator.unwrap_model(self.model)
        if self.ref_model is None and hasattr(unwrapped, "peft_config"):  # the SFT adapter, before any update
            return use_adapter(unwrapped, adapter_name="ref" if "ref" in unwrapped.peft_config else None)
        return contextlib.nullcontext()

    def _logps(self, model, inputs) -> torch.Tensor:
        backbone, head = self._lean if model is not self.ref_model else lean_head(model)
        return pair_logps(backbone, head, inputs)

    def compute_ref_log_probs(self, model, inputs):
        if self._lean is None:
            return super().compute_ref_log_probs(model, inputs)
        with torch.no_grad(), self._ref_context(), self.accelerator.autocast():
            return self._logps(self.ref_model or self.model, inputs).chunk(2, dim=0)

    def _compute_loss(self, model, inputs, return_outputs):
        if self._lean is None:
            return super()._compute_loss(model, inputs, return_outputs)
        assert not return_outputs, "prediction_loss_only is set: DPO evaluation needs no logits"
        mode = "train" if self.model.training else "eval"
        chosen_logps, rejected_logps = self._logps(model, inputs).chunk(2, dim=0)
        if self.precompute_ref_logps:
            ref_chosen, ref_rejected = inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
        else:
            ref_chosen, ref_rejected = self.compute_ref_log_probs(self.ref_model or model, inputs)
        chosen_ratio, rejected_ratio = chosen_logps - ref_chosen, rejected_logps - ref_rejected
        delta, loss_type = chosen_ratio - rejected_ratio, self.loss_types[0]
        if loss_type == "sigmoid":
            per_pair = -F.logsigmoid(self.beta * delta)
        elif loss_type == "hinge":
            per_pair = torch.relu(1 - self.beta * delta)
        else:  # ipo, length-normalised as TRL does
            ipo = chosen_ratio / inputs["chosen_lengths"] - rejected_ratio / inputs["rejected_lengths"]
            per_pair = (ipo - 1 / (2 * self.beta)) ** 2
        loss = per_pair.mean() * self.loss_weights[0]
        if len(self.loss_types) > 1:  # TRL's "sft": mean NLL over every chosen token of the batch
            loss = loss - chosen_logps.sum() / inputs["chosen_lengths"].sum() * self.loss_weights[1]
        if mode == "train":
            tokens = self.accelerator.gather_for_metrics(inputs["attention_mask"].sum()).sum().item()
            self._total_train_tokens += tokens // self._tp_size
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
        chosen_r, rejected_r = self.beta * chosen_ratio.detach(), self.beta * rejected_ratio.detach()
        gather = self.accelerator.gather
        for key, value in (("rewards/chosen", gather(chosen_r).mean()), ("rewards/rejected", gather(rejected_r).mean()),
                           ("rewards/accuracies", gather((chosen_r > rejected_r).float()).mean()),
                           ("rewards/margins", gather(chosen_r - rejected_r).mean()),
                           ("logps/chosen", gather(chosen_logps.detach()).mean()),
                           ("logps/rejected", gather(rejected_logps.detach()).mean())):
            self._metrics[mode][key].append(value.item())
        return loss

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        if {"prompt_ids", "chosen_ids", "rejected_ids"} <= set(dataset.column_names):
            return dataset  # already tokenized by sftpipe.dpo.encode; lengths checked there
        return super()._prepare_dataset(dataset, processing_class, args, dataset_name)

    def _precompute_ref_logps(self, dataset, name: str, batch_size: int):
        from safetensors.torch import load_file, save_file

        if set(REF_COLUMNS) <= set(dataset.column_names):
            return dataset
        path = self._ref_cache.get(name)
        if path is not None and path.is_file():
            cached = load_file(path)
            if len(cached["ref_chosen_logps"]) == len(dataset):
                return dataset.add_column("ref_chosen_logps", cached["ref_chosen_logps"].tolist()) \
                    .add_column("ref_rejected_logps", cached["ref_rejected_logps"].tolist())
        out = quietly(super()._precompute_ref_logps, dataset, name, batch_size)
        if path is not None and self.accelerator.is_main_process:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            save_file({c: torch.tensor(out[c], dtype=torch.float32) for c in REF_COLUMNS}, str(tmp))
            tmp.replace(path)
        return out

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if not self._group or dataset is None or "length" not in dataset.column_names:
            return super()._get_train_sampler(train_dataset)
        return GroupedSampler(dataset["length"], self.args.per_device_train_batch_size, self.args.seed)


def dpo_arguments(dcfg, *, output_dir: str, lr: float, precision: str, device: str, has_eval: bool,
                  report_to: list[str], **overrides) -> DPOConfig:
    """DPOConfig for a `dpo` config section (lengths are enforced when pairs are encoded, so no truncation)."""
    kwargs: dict[str, Any] = dict(
        output_dir=output_dir, learning_rate=lr, lr_scheduler_type=dcfg.scheduler, warmup_steps=dcfg.warmup_ratio,
        num_train_epochs=dcfg.epochs, max_steps=dcfg.max_steps, per_device_train_batch_size=dcfg.batch_size,
        per_device_eval_batch_size=dcfg.batch_size, gradient_accumulation_steps=dcfg.grad_accum,
        max_grad_norm=dcfg.max_grad_norm, seed=dcfg.seed, data_seed=dcfg.seed, bf16=precision == "bf16",
        fp16=False, use_cpu=device == "cpu", eval_strategy="steps" if has_eval else "no", eval_steps=dcfg.eval_steps,
        save_strategy="steps", save_steps=dcfg.save_steps, save_total_limit=dcfg.save_total_limit,
        logging_steps=dcfg.logging_steps, logging_first_step=True, report_to=report_to, disable_tqdm=True,
        remove_unused_columns=False, prediction_loss_only=True, gradient_checkpointing=False,
        activation_checkpointing=False,
        beta=dcfg.beta, loss_type=[dcfg.loss] + (["sft"] if dcfg.sft_weight else []),
        loss_weights=[1.0, dcfg.sft_weight] if dcfg.sft_weight else None, max_length=None,
        precompute_ref_log_probs=dcfg.precompute_ref_log_probs,
        precompute_ref_batch_size=2 * dcfg.batch_size, dataloader_num_workers=0, disable_dropout=True,
        load_best_model_at_end=has_eval and dcfg.early_stopping_patience is not None,
        metric_for_best_model="eval_loss" if has_eval else None, greater_is_better=False if has_eval else None,
        ddp_find_unused_parameters=False,
    )
    kwargs.update(overrides)
    fields = DPOConfig.__dataclass_fields__
    return DPOConfig(**{k: v for k, v in kwargs.items() if k in fields})
