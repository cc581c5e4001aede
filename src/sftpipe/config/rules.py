"""Rules across keys (and sections) that the Trainer enforces only after the model has loaded, or that a key
depends on silently; `load_config` reports them with every other problem before anything runs."""

from __future__ import annotations

from typing import Any


def _best_model(section: str, eval_steps: int, save_steps: int) -> list[str]:
    if save_steps % eval_steps == 0:
        return []
    return [f"{section}.save_steps: {save_steps} is not a multiple of {section}.eval_steps ({eval_steps}); with "
            "held-out data the best checkpoint is kept, so every eval needs a checkpoint; fix: set save_steps to a "
            f"multiple of {eval_steps}" + (" (unset, it is eval_steps)" if section == "train" else "")]


def _needs_eval(section: str, key: str, value: Any, eval_key: str) -> list[str]:
    if value is None:
        return []
    return [f"{section}.{key}: {value} needs held-out data, and {eval_key} is empty, so it would do nothing; fix: "
            f"set {eval_key}, or remove {section}.{key}"]


def cross_field_problems(cfg) -> list[str]:
    """Every problem across keys of a validated `SftpipeConfig`, one line each, with its fix.

    >>> from sftpipe.config import SftpipeConfig
    >>> cross_field_problems(SftpipeConfig.model_validate({"data": {"eval": ["e.jsonl"]},
    ...                                                    "train": {"eval_steps": 5, "save_steps": 2}}))[0][:58]
    'train.save_steps: 2 is not a multiple of train.eval_steps '
    """
    t, d = cfg.train, cfg.dpo
    problems = []
    if cfg.data.eval:  # the Trainer keeps the best checkpoint (load_best_model_at_end)
        problems += _best_model("train", t.eval_steps, t.save_steps or t.eval_steps)
    else:
        problems += _needs_eval("train", "early_stopping_patience", t.early_stopping_patience, "data.eval")
        problems += _needs_eval("train", "eval_limit", t.eval_limit, "data.eval")
    if d.eval and d.early_stopping_patience is not None:  # DPO keeps the best only when it stops early
        problems += _best_model("dpo", d.eval_steps, d.save_steps)
    elif not d.eval:
        problems += _needs_eval("dpo", "early_stopping_patience", d.early_stopping_patience, "dpo.eval")
    if t.fsdp and t.deepspeed:
        problems.append("train.fsdp and train.deepspeed are both set; fix: choose one way to shard")
    return problems
