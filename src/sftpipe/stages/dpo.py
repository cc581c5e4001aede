"""`sftpipe dpo`: a light preference pass (DPO) from an SFT run, which is its reference, on the same render.

Reads the config sections model, template, render and dpo. Read top to bottom: resolve the reference SFT run (or
checkpoint; its template must be this render's) -> read and validate the preference pairs -> tokenize each side
with sftpipe's renderer (a reply's trained tokens are exactly what SFT trains for it) -> load the policy (the SFT
adapter continued, or the SFT full weights) -> TRL's DPOTrainer with reference log-probs precomputed and cached ->
commit `<dpo.output_dir>/<name>/` through `sftpipe.runs` like `sftpipe train`: adapter or weights, tokenizer with the
template, generation_config.json, parity.json, run.json (kind dpo, `reference` = run, checkpoint, sha256) and the
model card; the run is named `dpo.name`, by default `<name>-dpo`. `--resume` continues from the latest complete
checkpoint.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from ..config import SftpipeConfig
from ..dataset import build_renderer
from ..dpo.dataset import load_or_encode, reference_cache_name
from ..dpo.reference import check_compatible, load_policy, load_reference_model, resolve_reference
from ..errors import ConfigError
from ..models import cache_dir
from ..runs import RunFolder, RunInfo, TemplateInfo, generation_config, git_commit, read_info, versions
from ..runs import write_card
from ..runs.folder import point_adapter_at_hub_id
from ..curated import FILES_HASH_DEFINITION
from ..distributed import barrier, check_shared
from ..io import require_files
from ..train.lifecycle import (built_once, callbacks, check_resume, checkpoint_step, results,
                               resume_grad_accum, resume_segments, save_final)
from ..train.load import choose_precision, device_kind
from . import show
from .show_train import TrainProgress

# Keys that must not change between a DPO run and its --resume.
RESUME_KEYS = {"model": None, "template": None, "render": None,
               "dpo": ("reference", "format", "beta", "loss", "lr", "scheduler", "warmup_ratio", "epochs", "max_steps",
                       "batch_size", "max_length", "max_prompt_length", "group_by_length", "seed",
                       "precompute_ref_log_probs")}
PARITY_EXAMPLES = 200


@dataclass
class DpoResult:
    """What a DPO run did and where it wrote it."""

    run_dir: Path
    reference: dict
    pairs: int
    rejected: int
    steps: int
    final_loss: float | None
    metrics: dict
    pairs_per_second: float | None
    seconds: float
    resumed_from: str | None


def _last(log_history: list[dict], key: str):
    return next((m[key] for m in reversed(log_history) if key in m), None)


def run(cfg: SftpipeConfig, *, resume: bool = False, progress: bool = True) -> DpoResult:
    """Train DPO per `cfg.dpo`; with `resume`, continue from the run's latest complete checkpoint."""
    t0 = time.perf_counter()
    dcfg = cfg.dpo
    cfg = cfg.model_copy(update={"name": dcfg.name or f"{cfg.name}-dpo"})  # the run's own name, in its run.json
    if not dcfg.train:
        raise ConfigError("dpo", ["train: no preference pairs; fix: set dpo.train to a JSONL of "
                                  "prompt/chosen/rejected records"])
    require_files(dcfg.train, "dpo.train")
    require_files(dcfg.eval, "dpo.eval")
    device = device_kind()
    precision = choose_precision(dcfg.precision, device)

    # The reference: a complete SFT run (or checkpoint) trained with this very template and base model
    reference = resolve_reference(dcfg.reference)
    renderer = build_renderer(cfg.model, cfg.template, cfg.render)
    tokenizer = renderer.tokenizer
    check_compatible(reference, renderer, cfg.model.name)
    adapter = reference.adapter
    from ..dpo.trainer import PreferenceTrainer, dpo_arguments, learning_rate

    lr = learning_rate(dcfg, adapter)
    has_eval = bool(dcfg.eval)

    # The run folder, then the processes
    folder, resume_from = RunFolder.begin(dcfg.output_dir, cfg.name, resume=resume, overwrite=dcfg.overwrite)
    args = dpo_arguments(dcfg, output_dir=str(folder.checkpoints), lr=lr, precision=precision, device=device,
                         has_eval=has_eval, report_to=[r for r in dcfg.report_to if r != "tensorboard"])
    main, world = args.process_index == 0, args.world_size
    if main:
        folder.prepare(resume)
    barrier()
    check_shared(folder.path, "dpo.output_dir")  # every process reads what the others write there

    # Data: pairs -> prompt/chosen/rejected ids with the SFT render (rejects with reasons under on_error: skip)
    builds = args.local_process_index == 0  # one process per machine encodes, the others map its dataset
    train = built_once(lambda: load_or_encode(dcfg.train, dcfg, renderer), builds, "dpo.train")
    evals = built_once(lambda: load_or_encode(dcfg.eval, dcfg, renderer), builds, "dpo.eval") if has_eval else None
    if not len(train):
        raise ConfigError("dpo", [f"train: none of the {train.records_in} pairs is usable "
                                  f"({dict(train.reasons)}); fix: see the rejects, or the pairs' format"])
    hashes = {"train_hash": train.data_hash, "eval_hash": evals.data_hash if evals else None}
    old = read_info(folder.path) if resume else None
    if old is not None:
        check_resume(old, cfg.model_dump(mode="json"), hashes, RESUME_KEYS)
        args.gradient_accumulation_steps = resume_grad_accum(old, "dpo", dcfg.grad_accum, world)  # keeps the batch
    accum = args.gradient_accumulation_steps

    # Model: the SFT policy (adapter continued, or full weights); its reference is the SFT policy itself
    from transformers import set_seed

    set_seed(dcfg.seed)
    model = load_policy(reference, len(tokenizer))
    ref_model = None if adapter or dcfg.precompute_ref_log_probs else load_reference_model(reference, len(tokenizer))
    eot_ids = renderer.end_of_turn_ids
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    base_path = Path(reference.info.base_model_path or reference.info.base_model)
    summary = train.summary()
    info = RunInfo(
        kind="dpo", config=cfg.model_dump(mode="json"), base_model=reference.info.base_model,
        base_model_path=reference.info.base_model_path, mode=reference.info.mode, device=device, precision=precision,
        batching="padded", world_size=world, learning_rate=lr,
        effective_batch={"sequences": float(dcfg.batch_size * accum * world),
                         "tokens": round(summary["tokens"] / max(len(train), 1) * dcfg.batch_size
                                         * accum * world, 1)},
        vocab_size=int(model.get_input_embeddings().weight.shape[0]),
        trainable_parameters=sum(p.numel() for p in model.parameters() if p.requires_grad),
        data={**hashes, "hash_definition": FILES_HASH_DEFINITION, "train": {"files": dcfg.train, **summary},
              "eval": {"files": dcfg.eval, **evals.summary()} if evals else None},
        template=TemplateInfo.of(renderer, eot_ids),
        mask_report={"examples": 2 * len(train), "tokens": summary["tokens"],
                     "trained_tokens": summary["chosen_tokens"] + summary["rejected_tokens"],
                     "trained_share": round((summary["chosen_tokens"] + summary["rejected_tokens"])
                                            / max(summary["tokens"], 1), 6), "eot_coverage": 1.0, "truncated": 0},
        reference=reference.record(), versions=versions(), git=git_commit(),
        resumed_from=(old.resumed_from if old else []) + ([resume_from.name] if resume_from else []),
        segments=resume_segments(old, "dpo", checkpoint_step(resume_from), world, accum))
    info.git_commit = (info.git or {}).get("commit")
    if main:
        sample = [renderer.render(p.conversation("chosen"))[0] for p in train.pairs(PARITY_EXAMPLES)]
        folder.write_start(info, tokenizer, sample, generation_config(base_path, tokenizer, eot_ids, pad_id),
                           train.rejects + (evals.rejects if evals else []))
    if progress and main:
        show.dpo_start(info, dcfg)

    # Train (reference log-probs precomputed once, cached by tokenized data + reference sha256), save, record
    cache = cache_dir() / "dpo-ref"
    ref_cache = {"train": cache / reference_cache_name(train, reference.sha256)}
    if evals:
        ref_cache["eval"] = cache / reference_cache_name(evals, reference.sha256)
    trainer = PreferenceTrainer(model=model, ref_model=ref_model, args=args, train_dataset=train.training_view(),
                                eval_dataset=evals.training_view() if evals else None, processing_class=tokenizer,
                                callbacks=callbacks(dcfg, folder.path, has_eval,
                                                    [TrainProgress(label="dpo")] if progress else []),
                                ref_cache=ref_cache, group_by_length=dcfg.group_by_length)
    from transformers import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    t_train = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    train_seconds = time.perf_counter() - t_train
    if adapter and "ref" in getattr(trainer.model, "peft_config", {}):
        trainer.model.delete_adapter("ref")  # the frozen reference copy is not part of the result
    save_final(trainer, folder.path, main)
    if main:
        point_adapter_at_hub_id(folder.path, info.base_model)
    state = trainer.state
    res = results(state, round(time.perf_counter() - t0, 2))
    info.best_checkpoint = res.pop("best_checkpoint")
    steps_run = state.global_step - checkpoint_step(resume_from)
    info.segments[-1]["to_step"] = state.global_step
    pairs_per_second = round(steps_run * dcfg.batch_size * accum * world / train_seconds, 3) \
        if steps_run > 0 else None
    keys = ("rewards/margins", "rewards/accuracies", "rewards/chosen", "rewards/rejected", "logps/chosen",
            "logps/rejected")
    dpo_metrics = {k: _last(state.log_history, k) for k in keys}
    res.update(pairs=len(train), pairs_per_second=pairs_per_second, tokens_per_second=None,
               first_loss=_last(list(reversed(state.log_history)), "loss"), **{k.replace("/", "_"): v
                                                                             for k, v in dpo_metrics.items()})
    if main:
        info.status, info.metrics, info.results = "complete", state.log_history, res
        folder.write_info(info)
        write_card(folder.path, info)
        folder.commit("dpo")
    barrier()
    return DpoResult(folder.final, info.reference or {}, len(train), len(train.rejects), state.global_step,
                     res["final_train_loss"], dpo_metrics, pairs_per_second, res["seconds"],
                     resume_from.name if resume_from else None)
