"""Sharded training (FSDP, DeepSpeed ZeRO): what is refused before anything loads, DeepSpeed's shipped presets,
and what changes in sftpipe when parameters are sharded.

accelerate shards only on accelerators: on a CPU it runs the processes as DDP whatever `fsdp` or `deepspeed` say,
so sftpipe refuses those keys there instead of training unsharded in silence.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

from ..config.sections import DEEPSPEED_PRESETS
from ..errors import ConfigError

_AUTO = "auto"  # filled in by transformers from TrainingArguments (batch, accumulation, clipping, precision)
_COMMON = {"train_batch_size": _AUTO, "train_micro_batch_size_per_gpu": _AUTO, "gradient_accumulation_steps": _AUTO,
           "gradient_clipping": _AUTO, "bf16": {"enabled": _AUTO}, "fp16": {"enabled": _AUTO}}
PRESETS: dict[str, dict[str, Any]] = {
    "zero2": {**_COMMON, "zero_optimization": {"stage": 2, "overlap_comm": True, "contiguous_gradients": True,
                                               "reduce_bucket_size": _AUTO, "allgather_bucket_size": 5e8}},
    # the final save gathers the 16-bit weights into one safetensors file (eval, export and serve read it)
    "zero3": {**_COMMON, "zero_optimization": {"stage": 3, "overlap_comm": True, "contiguous_gradients": True,
                                               "reduce_bucket_size": _AUTO, "stage3_prefetch_bucket_size": _AUTO,
                                               "stage3_param_persistence_threshold": _AUTO,
                                               "stage3_gather_16bit_weights_on_model_save": True}},
}
assert set(PRESETS) == set(DEEPSPEED_PRESETS)


def deepspeed_config(value: str) -> dict[str, Any]:
    """train.deepspeed as the config dict transformers takes: a shipped preset (`zero2`, `zero3`) or a JSON file."""
    if value in PRESETS:
        return json.loads(json.dumps(PRESETS[value]))  # a copy: transformers fills in the "auto" values
    path = Path(value)
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError("train.deepspeed", [f"{value!r}: cannot read it ({e.strerror}); fix: a preset ("
                                              f"{', '.join(PRESETS)}) or the path of a DeepSpeed JSON config"]) \
            from None
    except ValueError as e:
        raise ConfigError("train.deepspeed", [f"{value}: not JSON ({e}); fix: a DeepSpeed JSON config"]) from None
    stage = config.get("zero_optimization", {}).get("stage") if isinstance(config, dict) else None
    if stage not in (0, 1, 2, 3):
        raise ConfigError("train.deepspeed", [f"{value}: zero_optimization.stage is {stage!r}, not 0-3; fix: set "
                                              "it, or use a preset (zero2, zero3)"])
    return config


def check_sharding(tcfg, device: str, precision: str) -> dict[str, Any] | None:
    """Refuse what would not shard, or would fail after loading; returns the DeepSpeed config (None without)."""
    keys = [k for k in ("fsdp", "deepspeed") if getattr(tcfg, k)]
    if keys and device == "cpu":
        raise ConfigError("train." + keys[0], [
            f"accelerate runs processes on a CPU as DDP only, so train.{keys[0]} would not shard anything; fix: "
            f"remove train.{keys[0]} on a CPU (each process keeps the whole model), or train on GPUs"])
    if tcfg.fsdp and int(tcfg.fsdp_config.get("version", 2)) == 1 and tcfg.mode != "full" \
            and precision in ("bf16", "fp16"):
        raise ConfigError("train.fsdp_config", [
            f"FSDP1 flattens every parameter of a wrapped module into one tensor of one dtype, but LoRA keeps its "
            f"adapters in fp32 beside the {precision} base; fix: use FSDP2 (train.fsdp_config.version: 2, the "
            "default), which shards each parameter as it is"])
    if not tcfg.deepspeed:
        return None
    if importlib.util.find_spec("deepspeed") is None:
        raise ConfigError("train.deepspeed", ["DeepSpeed is not installed; fix: pip install 'sftpipe[deepspeed]' "
                                              "(on the GPU machines), or use train.fsdp"])
    return deepspeed_config(tcfg.deepspeed)


def shards_parameters(trainer) -> str | None:
    """Why the output layer's weight cannot be read after the forward (FSDP1, ZeRO-3), or None when it can. The
    chunked loss reads it there. FSDP2 can: its weight is a DTensor, and a matmul with it is exact (tested)."""
    if getattr(trainer, "is_fsdp_enabled", False) and trainer.accelerator.state.fsdp_plugin.fsdp_version == 1:
        return "FSDP1 leaves only a flat shard of the output layer outside the forward"
    if getattr(trainer, "is_deepspeed_enabled", False):
        from transformers.integrations import is_deepspeed_zero3_enabled

        if is_deepspeed_zero3_enabled():
            return "ZeRO-3 partitions the output layer"
    return None
