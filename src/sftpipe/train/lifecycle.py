"""What every training stage (SFT, DPO) does around `Trainer.train()`: process barriers, the resume check, the
library callbacks, saving the final weights, and the results summary recorded in run.json."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from ..distributed import all_ok, barrier
from ..errors import ConfigError
from ..runs import RunInfo
from .callbacks import CheckpointMarker

T = TypeVar("T")

# Keys that must not change between a run and its --resume (anything else, e.g. logging, may). grad_accum may, as
# long as the global batch stays (see resume_grad_accum).
RESUME_KEYS = {"model": None, "template": None, "render": None, "lora": None,
               "train": ("mode", "lr", "scheduler", "warmup_ratio", "epochs", "max_steps", "batch_size", "max_tokens",
                         "pad_to_multiple_of", "weight_decay", "seed", "batching", "loss_positions")}


def built_once(build: Callable[[], T], builds: bool, what: str) -> T:
    """`build()` on the processes with `builds` (one per machine) while the others wait, then on the others, which
    find the result in the cache. Any builder's failure stops every other process with an error that points at it."""
    if builds:
        try:
            out = build()
        except BaseException:
            all_ok(False)
            raise
    if not all_ok(True):
        raise ConfigError("config", [f"{what}: another process failed to render the dataset (its error is above); "
                                     "fix: that error, then run again"])
    return out if builds else build()


def check_resume(old: RunInfo, new_config: dict[str, Any], hashes: dict[str, str | None],
                 keys: dict[str, Any] = RESUME_KEYS) -> None:
    """Refuse a --resume whose data or training-shaping config differs from the run's own."""
    problems = [f"data.{k}: content hash changed since the run started" for k, v in hashes.items()
                if old.data.get(k) != v]
    for section, names in keys.items():
        was, now = old.section(section), new_config.get(section) or {}
        for key in names or now:
            if was.get(key) != now.get(key):
                problems.append(f"{section}.{key}: {was.get(key)!r} -> {now.get(key)!r}")
    if problems:
        raise ConfigError("--resume", problems + ["fix: resume with the run's own config, or start a new --name"])


def global_accum(old_world: int, old_accum: int, asked: int, configured: int, world: int) -> int:
    """The gradient accumulation for `world` processes that keeps a run's global batch: `old_accum` x `old_world`
    micro-batches per optimizer step, as the run was trained until now. `asked` is train.grad_accum now,
    `configured` what the run's config said: an unchanged value is adjusted, a changed one must keep the batch.

    >>> global_accum(2, 1, asked=1, configured=1, world=1), global_accum(1, 4, asked=4, configured=4, world=2)
    (2, 2)
    >>> global_accum(2, 2, asked=1, configured=2, world=4)
    1
    """
    total = old_accum * old_world
    if asked * world == total:
        return asked
    launches = " or ".join(f"{n} process{'es' * (n > 1)} (torchrun --nproc_per_node {n} ...)"
                           for n in range(1, total + 1) if total % n == 0)
    if asked != configured:
        raise ConfigError("--resume", [f"train.grad_accum: {asked} x {world} process(es) = {asked * world} "
                                       f"micro-batches per optimizer step, but the run takes {total} ({old_world} "
                                       f"process(es) x grad_accum {old_accum}); fix: leave train.grad_accum at "
                                       f"{configured} (sftpipe adjusts it) and resume with {launches}"])
    if total % world:
        raise ConfigError("--resume", [f"{world} processes cannot split the run's {total} micro-batches per "
                                       f"optimizer step ({old_world} process(es) x grad_accum {old_accum}) evenly; "
                                       f"fix: resume with {launches}"])
    return total // world


def resume_segments(old: RunInfo | None, section: str, step: int, world: int, accum: int) -> list[dict[str, Any]]:
    """run.json's segments after (re)starting at optimizer step `step`: each stretch of steps with its world size
    and gradient accumulation; the earlier ones end at `step` (a resume from an older checkpoint drops the
    steps after it), the new one is open (`to_step` None) until the run ends."""
    prev = [dict(seg) for seg in (old.segments if old else []) if seg["from_step"] < step]
    if old is not None and not old.segments and step:  # a run.json from before segments were recorded
        prev = [{"world_size": old.world_size, "grad_accum": old.section(section).get("grad_accum", 1),
                 "from_step": 0, "to_step": step}]
    if prev:
        prev[-1]["to_step"] = step
    return prev + [{"world_size": world, "grad_accum": accum, "from_step": step, "to_step": None}]


def checkpoint_step(checkpoint: Path | None) -> int:
    """The optimizer step a checkpoint folder (`checkpoint-<step>`) was saved at; 0 for none."""
    return int(checkpoint.name.rsplit("-", 1)[1]) if checkpoint is not None else 0


def resume_grad_accum(old: RunInfo, section: str, asked: int, world: int) -> int:
    """`global_accum` for resuming the run `old` (its last segment, or its world size and config before segments
    were recorded) with `world` processes and `<section>.grad_accum` = `asked`."""
    configured = int(old.section(section).get("grad_accum", 1))
    last = old.segments[-1] if old.segments else {"world_size": old.world_size, "grad_accum": configured}
    return global_accum(int(last["world_size"]), int(last["grad_accum"]), asked, configured, world)


def callbacks(tcfg, run_dir: Path, has_eval: bool, extra: list | None = None) -> list:
    """Checkpoint markers, offline tensorboard event files in the run folder, early stopping, plus `extra`."""
    from transformers import EarlyStoppingCallback
    from transformers.integrations import TensorBoardCallback

    out: list = [CheckpointMarker(), *(extra or [])]
    if "tensorboard" in tcfg.report_to:
        tb = TensorBoardCallback()
        tb.logging_dir = str(run_dir / "tensorboard")
        out.append(tb)
    if tcfg.early_stopping_patience and has_eval:
        out.append(EarlyStoppingCallback(early_stopping_patience=tcfg.early_stopping_patience))
    return out


def save_final(trainer, run_dir: Path, main: bool) -> None:
    """Save the trained weights into run_dir through a temp folder (all processes: FSDP gathers). Under FSDP with
    sharded checkpoints the final weights are gathered whole (safetensors), which eval, export and serve read."""
    tmp = run_dir / ".final.tmp"
    if main and tmp.exists():
        shutil.rmtree(tmp)
    plugin = getattr(trainer.accelerator.state, "fsdp_plugin", None)
    if trainer.is_fsdp_enabled and "FULL_STATE_DICT" not in str(plugin.state_dict_type):
        plugin.set_state_dict_type("FULL_STATE_DICT")  # checkpoints stay sharded; the final weights are whole
    barrier()
    trainer.save_model(str(tmp))
    barrier()
    if main:
        for f in tmp.iterdir():  # skip peft's stub card and the pickled TrainingArguments
            if f.name not in ("README.md", "training_args.bin"):
                os.replace(f, run_dir / f.name)
        shutil.rmtree(tmp)


def mean_train_loss(log_history: list[dict]) -> float | None:
    """Mean training loss over the whole run, resumed parts included: each logged loss (a mean since the previous
    log) weighted by the steps it covers.

    >>> mean_train_loss([{"step": 1, "loss": 4.0}, {"step": 3, "loss": 1.0}, {"step": 3, "eval_loss": 9.0}])
    2.0
    """
    total = steps = prev = 0
    for m in log_history:
        if "loss" in m:
            total += m["loss"] * (m["step"] - prev)
            steps += m["step"] - prev
            prev = m["step"]
    return total / steps if steps else None


def results(state, seconds: float) -> dict[str, Any]:
    """The run's results block from the Trainer state (whole-run figures, also after a resume)."""
    losses = [m for m in state.log_history if "loss" in m]
    best = Path(state.best_model_checkpoint).name if state.best_model_checkpoint else None
    return {"steps": state.global_step, "final_train_loss": losses[-1]["loss"] if losses else None,
            "mean_train_loss": mean_train_loss(state.log_history), "best_eval_loss": state.best_metric,
            "tokens_seen": state.num_input_tokens_seen,
            "trained_tokens_seen": losses[-1].get("trained_tokens_seen") if losses else None,
            "tokens_per_second": losses[-1].get("tokens_per_second") if losses else None,
            "final_weights": "best" if best else "last", "best_checkpoint": best, "seconds": seconds}
