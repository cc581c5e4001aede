"""`sftpipe train`: render the data, train a LoRA / QLoRA adapter or full weights with transformers' Trainer,
and write the run folder.

Reads the config sections model, template, data, render, train and lora. Writes `<train.output_dir>/<name>/`:
adapter or weights (safetensors), the tokenizer with the exact training template, generation_config.json (eos
covers the end-of-turn token), parity.json, run.json and the model card README.md; checkpoints under
`checkpoints/`, each marked complete only after it is fully written. Runs unchanged under torchrun /
accelerate launch (DDP; gloo on CPU, NCCL on GPU; FSDP via train.fsdp).
"""

from __future__ import annotations

import functools
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import SftpipeConfig
from ..errors import ConfigError, TemplateError
from ..io import atomic_write_text, write_json, write_jsonl
from ..models import EMBEDDED
from ..parity import check_parity, save_tokenizer
from ..stages.render import build_renderer
from .callbacks import CheckpointMarker, RichProgress, latest_checkpoint, remove_partial
from .card import write_card
from .data import (HASH_DEFINITION, ItemCollator, ItemDataset, end_of_turn_ids, load_split, resolve_batching,
                   resolve_max_tokens, resolve_pad_multiple)
from .load import check_mode, choose_precision, device_kind, learning_rate, load_for_training, read_run_info
from .runinfo import effective_batch, generation_config, git_commit, versions

# Keys that must not change between a run and its --resume (anything else, e.g. logging, may).
RESUME_KEYS = {"model": None, "template": None, "render": None, "lora": None,
               "train": ("mode", "lr", "scheduler", "warmup_ratio", "epochs", "max_steps", "batch_size", "max_tokens",
                         "pad_to_multiple_of", "grad_accum", "weight_decay", "seed", "batching", "loss_positions")}


@dataclass
class TrainResult:
    """What a training run did and where it wrote it."""

    run_dir: Path
    mode: str
    precision: str
    batching: str
    world_size: int
    steps: int
    final_loss: float | None
    best_eval_loss: float | None
    best_checkpoint: str | None
    tokens_seen: int
    tokens_per_second: float | None
    seconds: float
    resumed_from: str | None
    effective_batch: dict[str, float]


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _prepare_folder(run_dir: Path, *, resume: bool, overwrite: bool, main: bool) -> Path | None:
    """Check the run folder against --resume / train.overwrite; returns the checkpoint to resume from."""
    ckpts = run_dir / "checkpoints"
    if resume:
        latest = latest_checkpoint(ckpts)
        if latest is None:
            raise ConfigError("--resume", [f"{ckpts} holds no complete checkpoint to resume from; fix: run "
                                           "without --resume"])
        if main:
            remove_partial(ckpts)
        return latest
    if run_dir.exists() and any(run_dir.iterdir()):
        if not overwrite:
            raise ConfigError("train", [f"run folder {run_dir} exists; fix: pass --resume to continue it, --set "
                                        "train.overwrite=true to replace it, or choose another --name"])
        if main:
            shutil.rmtree(run_dir)
    return None


def _check_resume(old: dict[str, Any], cfg: SftpipeConfig, hashes: dict[str, str | None]) -> None:
    problems = [f"data.{k}: content hash changed since the run started" for k, v in hashes.items()
                if old["data"].get(k) != v]
    new = cfg.model_dump(mode="json")
    for section, keys in RESUME_KEYS.items():
        for key in keys or new[section]:
            if old["config"][section].get(key) != new[section].get(key):
                problems.append(f"{section}.{key}: {old['config'][section].get(key)!r} -> {new[section].get(key)!r}")
    if problems:
        raise ConfigError("--resume", problems + ["fix: resume with the run's own config, or start a new --name"])


def _callbacks(tcfg, run_dir: Path, progress: bool, has_eval: bool) -> list:
    from transformers import EarlyStoppingCallback
    from transformers.integrations import TensorBoardCallback

    callbacks: list = [CheckpointMarker()]
    if progress:
        callbacks.append(RichProgress())
    if "tensorboard" in tcfg.report_to:  # offline event files in the run folder
        tb = TensorBoardCallback()
        tb.logging_dir = str(run_dir / "tensorboard")
        callbacks.append(tb)
    if tcfg.early_stopping_patience and has_eval:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=tcfg.early_stopping_patience))
    return callbacks


def _save_final(trainer, run_dir: Path, main: bool) -> None:
    """Save the trained weights into run_dir through a temp folder (all processes: FSDP gathers)."""
    tmp = run_dir / ".final.tmp"
    if main and tmp.exists():
        shutil.rmtree(tmp)
    _barrier()
    trainer.save_model(str(tmp))
    _barrier()
    if main:
        for f in tmp.iterdir():  # skip peft's stub card and the pickled TrainingArguments
            if f.name not in ("README.md", "training_args.bin"):
                os.replace(f, run_dir / f.name)
        shutil.rmtree(tmp)


def run(cfg: SftpipeConfig, *, resume: bool = False, progress: bool = True) -> TrainResult:
    """Train per `cfg`; with `resume`, continue from the run's latest complete checkpoint."""
    t0 = time.perf_counter()
    tcfg = cfg.train
    device = device_kind()
    check_mode(tcfg.mode, device)
    precision = choose_precision(tcfg.precision, device)
    batching = resolve_batching(tcfg.batching, device)
    run_dir = Path(tcfg.output_dir) / cfg.name
    lr = learning_rate(tcfg)
    has_eval = bool(cfg.data.eval)
    from .trainer import SftTrainer, training_arguments

    args = training_arguments(tcfg, output_dir=str(run_dir / "checkpoints"), lr=lr, precision=precision,
                              device=device, batching=batching, has_eval=has_eval,
                              report_to=[r for r in tcfg.report_to if r != "tensorboard"])
    _ = args.device  # sets up the process group under torchrun / accelerate launch
    main, world = args.process_index == 0, args.world_size
    resume_from = _prepare_folder(run_dir, resume=resume, overwrite=tcfg.overwrite, main=main)
    _barrier()

    # Data: render with the template, batch (length-grouped padded on CPU, packed on GPU)
    renderer = build_renderer(cfg)
    tokenizer = renderer.tokenizer
    max_tokens = resolve_max_tokens(tcfg.max_tokens, device)
    pad_multiple = resolve_pad_multiple(tcfg.pad_to_multiple_of, device, precision)
    split = functools.partial(load_split, cfg, renderer, batching=batching, seed=tcfg.seed, max_tokens=max_tokens,
                              pad_multiple=pad_multiple, progress=progress and main)
    train, evals = split("train"), split("eval")
    hashes = {"train_hash": train.hash, "eval_hash": evals.hash if evals else None}
    old = read_run_info(run_dir) if resume else None
    if old is not None:
        _check_resume(old, cfg, hashes)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    from transformers import set_seed

    set_seed(tcfg.seed)  # the adapter's random init: the same for every run of this config, at any process count
    model = load_for_training(cfg, tokenizer, renderer.added_tokens, device=device, precision=precision,
                              local_rank=args.local_process_index)
    eot_ids = end_of_turn_ids(train.examples)
    info: dict[str, Any] = {
        "config": cfg.model_dump(mode="json"),
        "base_model": cfg.model.name if cfg.model.name in EMBEDDED else str(Path(cfg.model.name).resolve()),
        "mode": tcfg.mode, "device": device, "precision": precision, "batching": batching, "world_size": world,
        "learning_rate": lr, "effective_batch": effective_batch(train.items, tcfg.grad_accum, world),
        "micro_batch_max_tokens": max_tokens, "pad_to_multiple_of": pad_multiple if batching == "padded" else None,
        "vocab_size": int(model.get_input_embeddings().weight.shape[0]),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "data": {**hashes, "hash_definition": HASH_DEFINITION, "train": train.summary(),
                 "eval": evals.summary() if evals else None},
        "template": {"name": renderer.template.name, "sha256": renderer.template.sha256,
                     "source": renderer.template.source, "added_tokens": renderer.added_tokens,
                     "end_of_turn_ids": eot_ids},
        "mask_report": train.mask.to_dict(), "eval_mask_report": evals.mask.to_dict() if evals else None,
        "versions": versions(), "git": git_commit(), "status": "running",
        "resumed_from": (old or {}).get("resumed_from", []) + ([resume_from.name] if resume_from else []),
        "metrics": [], "best_checkpoint": None, "results": {}}
    info["git_commit"] = (info["git"] or {}).get("commit")
    if main:
        save_tokenizer(tokenizer, run_dir)
        sample = (train.examples + (evals.examples if evals else []))[: tcfg.parity_examples]
        parity = check_parity(run_dir, sample)
        write_json(run_dir / "parity.json", parity)
        info["parity"] = {k: parity[k] for k in ("examples_checked", "text_mismatches", "token_mismatches")}
        if parity["text_mismatches"] or parity["token_mismatches"]:
            raise TemplateError(f"parity failed ({parity['text_mismatches']} text / {parity['token_mismatches']} "
                                f"token mismatches, see {run_dir / 'parity.json'}); the saved tokenizer would "
                                "serve a different render than training would see")
        rejects = train.rejects + (evals.rejects if evals else [])
        if rejects:
            write_jsonl(run_dir / "rejects.jsonl", rejects)
        write_json(run_dir / "run.json", info)
        gen = generation_config(Path(_resolve_base(cfg)), tokenizer, eot_ids, pad_id)
        atomic_write_text(run_dir / "generation_config.json", gen.to_json_string())

    if progress and main:
        eb = info["effective_batch"]
        print(f"[train] {tcfg.mode} on {device} ({precision}, {batching} batches, {world} process(es)): effective "
              f"batch {eb['sequences']} sequences / ~{eb['tokens']:.0f} tokens per step "
              f"(batch_size {tcfg.batch_size} x grad_accum {tcfg.grad_accum} x {world})", flush=True)
    trainer = SftTrainer(model=model, args=args, train_dataset=ItemDataset(train.items),
                         eval_dataset=ItemDataset(evals.items) if evals else None,
                         data_collator=ItemCollator(batching, pad_id, pad_multiple), loss_positions=tcfg.loss_positions,
                         callbacks=_callbacks(tcfg, run_dir, progress, has_eval))
    from transformers import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # RichProgress (or nothing) instead of printed dicts
    output = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    _save_final(trainer, run_dir, main)

    state = trainer.state
    losses = [m for m in state.log_history if "loss" in m]
    best = Path(state.best_model_checkpoint).name if state.best_model_checkpoint else None
    seconds = round(time.perf_counter() - t0, 2)
    results = {"steps": state.global_step, "final_train_loss": losses[-1]["loss"] if losses else None,
               "mean_train_loss": output.training_loss, "best_eval_loss": state.best_metric,
               "tokens_seen": state.num_input_tokens_seen,
               "trained_tokens_seen": losses[-1].get("trained_tokens_seen") if losses else None,
               "tokens_per_second": losses[-1].get("tokens_per_second") if losses else None,
               "final_weights": "best" if best else "last", "seconds": seconds}
    if main:
        info.update(status="complete", metrics=state.log_history, best_checkpoint=best, results=results)
        write_json(run_dir / "run.json", info)
        write_card(run_dir, info)
    _barrier()
    return TrainResult(run_dir, tcfg.mode, precision, batching, world, state.global_step, results["final_train_loss"],
                       state.best_metric, best, state.num_input_tokens_seen, results["tokens_per_second"], seconds,
                       resume_from.name if resume_from else None, info["effective_batch"])


def _resolve_base(cfg: SftpipeConfig) -> Path:
    from ..models import resolve_model

    return resolve_model(cfg.model.name)


def print_summary(result: TrainResult) -> None:
    """A short table of what the run did (CLI)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"train {result.run_dir}", show_header=False, title_justify="left")
    eb = result.effective_batch
    for key, value in [
        ("mode / precision / batching / processes",
         f"{result.mode} / {result.precision} / {result.batching} / {result.world_size}"),
        ("steps", result.steps), ("effective batch", f"{eb['sequences']} sequences, {eb['tokens']:.0f} tokens"),
        ("final train loss", result.final_loss), ("best eval loss", result.best_eval_loss),
        ("best checkpoint", result.best_checkpoint), ("tokens seen", result.tokens_seen),
        ("tokens/s", result.tokens_per_second), ("seconds", result.seconds),
        *([("resumed from", result.resumed_from)] if result.resumed_from else [])]:
        table.add_row(key, str(value))
    Console().print(table)
