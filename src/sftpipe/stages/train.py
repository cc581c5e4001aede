"""`sftpipe train`: render the data, train a LoRA / QLoRA adapter or full weights with transformers' Trainer,
and commit the run folder.

Reads the config sections model, template, data, render, train and lora. Writes `<train.output_dir>/<name>/`
through `sftpipe.runs`: adapter or weights (safetensors), the tokenizer with the exact training template,
generation_config.json (eos covers the end-of-turn token), parity.json, run.json and the model card README.md;
checkpoints under `checkpoints/`, each marked complete only after it is fully written. Runs unchanged under
torchrun / accelerate launch (DDP; gloo on CPU, NCCL on GPU; FSDP via train.fsdp).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from pathlib import Path

from ..config import SftpipeConfig
from ..dataset import build_renderer
from ..models import model_record, resolve_model
from ..runs import RunFolder, RunInfo, TemplateInfo, generation_config, git_commit, read_info, versions
from ..runs import write_card
from ..runs.folder import point_adapter_at_hub_id
from ..curated import FILES_HASH_DEFINITION
from ..train.data import (ItemCollator, ItemDataset, effective_batch, end_of_turn_ids,
                          example_groups, load_split, resolve_batching, resolve_max_tokens, resolve_pad_multiple)
from ..distributed import barrier, check_shared
from ..train.lifecycle import (callbacks, check_resume, checkpoint_step, results, resume_grad_accum,
                               resume_segments, save_final)
from ..train.parallel import check_sharding
from ..train.load import check_mode, choose_precision, device_kind, learning_rate, load_for_training
from . import show
from .show_train import TrainProgress


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


def run(cfg: SftpipeConfig, *, resume: bool = False, progress: bool = True) -> TrainResult:
    """Train per `cfg`; with `resume`, continue from the run's latest complete checkpoint."""
    t0 = time.perf_counter()
    tcfg = cfg.train
    device = device_kind()
    check_mode(tcfg.mode, device)
    precision = choose_precision(tcfg.precision, device)
    sharding = check_sharding(tcfg, device, precision)  # the DeepSpeed config, when train.deepspeed is set
    batching = resolve_batching(tcfg.batching, device)
    lr = learning_rate(tcfg)
    has_eval = bool(cfg.data.eval)
    from ..train.trainer import SftTrainer, training_arguments

    # The run folder (an existing run is replaced only when the new one commits), then the processes
    folder, resume_from = RunFolder.begin(tcfg.output_dir, cfg.name, resume=resume, overwrite=tcfg.overwrite)
    args = training_arguments(tcfg, output_dir=str(folder.checkpoints), lr=lr, precision=precision, device=device,
                              batching=batching, has_eval=has_eval, deepspeed=sharding,
                              report_to=[r for r in tcfg.report_to if r != "tensorboard"])
    _ = args.device  # sets up the process group under torchrun / accelerate launch
    main, world = args.process_index == 0, args.world_size
    if main:
        folder.prepare(resume)
    barrier()
    check_shared(folder.path, "train.output_dir")  # every process reads what the others write there

    # Data: render with the template, batch (length-grouped padded on CPU, packed on GPU)
    renderer = build_renderer(cfg.model, cfg.template, cfg.render)
    tokenizer = renderer.tokenizer
    max_tokens = resolve_max_tokens(tcfg.max_tokens, device)
    pad_multiple = resolve_pad_multiple(tcfg.pad_to_multiple_of, device, precision)
    split = functools.partial(load_split, cfg, renderer, batching=batching, seed=tcfg.seed, max_tokens=max_tokens,
                              pad_multiple=pad_multiple, progress=show.tracker() if progress and main else None,
                              builds=args.local_process_index == 0)
    train, evals = split("train"), split("eval")
    hashes = {"train_hash": train.hash, "eval_hash": evals.hash if evals else None}
    old = read_info(folder.path) if resume else None
    if old is not None:
        check_resume(old, cfg.model_dump(mode="json"), hashes)
        # the global batch defines the run: another process count keeps it through gradient accumulation
        args.gradient_accumulation_steps = resume_grad_accum(old, "train", tcfg.grad_accum, world)
    accum = args.gradient_accumulation_steps
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    # Model: the base (+ LoRA adapter), seeded so the adapter's init is the same at any process count
    from transformers import set_seed

    set_seed(tcfg.seed)
    model = load_for_training(cfg, tokenizer, renderer.added_tokens, device=device, precision=precision,
                              local_rank=args.local_process_index)
    eot_ids = end_of_turn_ids(train.examples)
    base_path = resolve_model(cfg.model.name)
    git = git_commit()
    info = RunInfo(
        config=cfg.model_dump(mode="json"),
        base_model=model_record(cfg.model.name, base_path),
        base_model_path=str(base_path), mode=tcfg.mode, device=device, precision=precision, batching=batching,
        world_size=world, learning_rate=lr, effective_batch=effective_batch(train.items, accum, world),
        segments=resume_segments(old, "train", checkpoint_step(resume_from), world, accum),
        vocab_size=int(model.get_input_embeddings().weight.shape[0]),
        trainable_parameters=sum(p.numel() for p in model.parameters() if p.requires_grad),
        micro_batch_max_tokens=max_tokens, pad_to_multiple_of=pad_multiple if batching == "padded" else None,
        data={**hashes, "hash_definition": FILES_HASH_DEFINITION, "train": train.summary(),
              "eval": evals.summary() if evals else None},
        template=TemplateInfo.of(renderer, eot_ids),
        mask_report=train.mask.to_dict(), eval_mask_report=evals.mask.to_dict() if evals else None,
        versions=versions(), git=git, git_commit=(git or {}).get("commit"),
        resumed_from=(old.resumed_from if old else []) + ([resume_from.name] if resume_from else []))
    if main:
        sample = train.parity_sample(tcfg.parity_examples)
        sample += evals.parity_sample(tcfg.parity_examples - len(sample)) if evals else []
        folder.write_start(info, tokenizer, sample, generation_config(base_path, tokenizer, eot_ids, pad_id),
                           train.rejects + (evals.rejects if evals else []))
    if progress and main:
        show.train_start(info, tcfg)

    # Train, save, record
    trainer = SftTrainer(model=model, args=args, train_dataset=ItemDataset(train.items),
                         eval_dataset=ItemDataset(evals.items) if evals else None,
                         data_collator=ItemCollator(batching, pad_id, pad_multiple), loss_positions=tcfg.loss_positions,
                         example_groups=example_groups(train.examples),
                         callbacks=callbacks(tcfg, folder.path, has_eval, [TrainProgress()] if progress else []))
    if trainer.sharded and trainer.head is not None and progress and main:
        show.log("train")(f"{trainer.sharded}: the loss takes the trained positions' logits from inside the forward "
                          "(no chunking)")
    from transformers import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # our progress (or nothing) instead of printed dicts
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    save_final(trainer, folder.path, main)
    if main:
        point_adapter_at_hub_id(folder.path, info.base_model)
    state = trainer.state
    info.examples_seen = trainer.examples_seen()
    res = results(state, round(time.perf_counter() - t0, 2))
    info.best_checkpoint = res.pop("best_checkpoint")
    info.segments[-1]["to_step"] = state.global_step
    if main:
        info.status, info.metrics, info.results = "complete", state.log_history, res
        folder.write_info(info)
        write_card(folder.path, info)
        folder.commit("sft")
    barrier()
    return TrainResult(folder.final, tcfg.mode, precision, batching, world, state.global_step,
                       res["final_train_loss"], state.best_metric, info.best_checkpoint, state.num_input_tokens_seen,
                       res["tokens_per_second"], res["seconds"], resume_from.name if resume_from else None,
                       info.effective_batch)
