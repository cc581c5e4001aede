"""Models for training: device and precision choice, and the LoRA / QLoRA / full setup. Loading a finished run
is `sftpipe.runs.load`."""

from __future__ import annotations

import importlib.util
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError
from ..models import load_error, resolve_model
from .dropout import lean_dropout

LORA_LR, FULL_LR = 2e-4, 2e-5
# peft reads the attribute transformers 5 renamed; the warning is theirs to fix and says nothing to our users
warnings.filterwarnings("ignore", message=r".*`is_gradient_checkpointing` is deprecated", category=FutureWarning)
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def device_kind() -> str:
    """'cuda' when a CUDA GPU is visible, else 'cpu'."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def cpu_flags() -> set[str]:
    """The CPU feature flags from /proc/cpuinfo (empty where it cannot be read)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    return {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split(":", 1)[1].split()}


def native_cpu_bf16(flags: set[str] | None = None, capability: str | None = None, onednn_isa: str | None = None
                    ) -> bool:
    """True when this CPU has bf16 dot products (avx512_bf16 / AMX) and torch's kernels may use them: ATen's
    capability is AVX-512 (`ATEN_CPU_CAPABILITY=avx2` holds it below) and `ONEDNN_MAX_CPU_ISA`, if set, allows
    bf16. Held below, bf16 is emulated: several times slower than fp32.

    >>> native_cpu_bf16({"avx512_bf16"}, "AVX512", None), native_cpu_bf16({"avx512_bf16"}, "AVX2", None)
    (True, False)
    >>> native_cpu_bf16({"amx_bf16"}, "AVX512", "avx2"), native_cpu_bf16({"amx_bf16"}, "AVX512", "AVX512_CORE_AMX")
    (False, True)
    """
    flags = cpu_flags() if flags is None else flags
    capability = torch.backends.cpu.get_cpu_capability() if capability is None else capability
    isa = (os.environ.get("ONEDNN_MAX_CPU_ISA", "") if onednn_isa is None else onednn_isa).upper()
    isa_allows = not isa or isa in ("ALL", "DEFAULT") or any(x in isa for x in ("BF16", "AMX", "FP16", "AVX10"))
    return bool(flags & set(CPU_BF16_FLAGS)) and capability.startswith("AVX512") and isa_allows


def choose_precision(requested: str, device: str) -> str:
    """`auto` -> bf16 on GPUs that support it (else fp16); on CPUs, bf16 autocast where `native_cpu_bf16` (measured
    faster with the same loss curve, see bench/train_bench.py), else fp32."""
    if device == "cuda":
        if requested == "auto":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        if requested == "bf16" and not torch.cuda.is_bf16_supported():
            raise ConfigError("config", ["train.precision: bf16, but this GPU has no bf16 support; "
                                         "fix: set train.precision to fp16 or auto"])
        return requested
    if requested == "auto":
        return "bf16" if native_cpu_bf16() else "fp32"
    if requested == "fp16":
        raise ConfigError("config", ["train.precision: fp16 needs a GPU; fix: set train.precision to auto, bf16 "
                                     "or fp32 on a CPU"])
    return requested


def check_mode(mode: str, device: str) -> None:
    """QLoRA needs CUDA and bitsandbytes: say so, and name `lora` as the alternative."""
    if mode != "qlora":
        return
    if device != "cuda":
        raise ConfigError("config", ["train.mode: qlora quantizes the base model to 4-bit NF4 with bitsandbytes, "
                                     "which needs a CUDA GPU, and this machine has none; fix: set train.mode=lora "
                                     "(--set train.mode=lora), which trains the same adapter on full-precision "
                                     "weights"])
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError("config", ["train.mode: qlora needs the bitsandbytes package; fix: pip install "
                                     "bitsandbytes, or set train.mode=lora"])


def learning_rate(tcfg) -> float:
    """train.lr, else the guide's default for the mode (LoRA 2e-4, full 2e-5)."""
    return tcfg.lr if tcfg.lr is not None else (FULL_LR if tcfg.mode == "full" else LORA_LR)


def _dtype(mode: str, precision: str):
    # LoRA: the frozen base weights are stored in half precision (autocast would cast them at every call anyway).
    if mode == "lora" and precision in ("bf16", "fp16"):
        return torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.float32


def upcast_all_but_linears(model) -> int:
    """Keep only the base model's Linear weights in half precision: embeddings (and a tied output layer), norms and
    the rest go back to fp32, so the residual stream stays fp32 under autocast. Returns how many tensors moved."""
    head = model.get_output_embeddings()
    half = {id(p) for m in model.modules() if type(m) is torch.nn.Linear and m is not head for p in m.parameters()}
    moved = 0
    for p in model.parameters():
        if id(p) not in half and p.dtype != torch.float32:
            p.data = p.data.float()
            moved += 1
    return moved


def load_for_training(cfg, tokenizer, added_tokens: list[str], *, device: str, precision: str,
                      local_rank: int = 0):
    """The model to train: the base (resized for added template tokens), wrapped in a LoRA adapter unless full.

    Added tokens' embedding rows are trained (`trainable_token_indices`), so the adapter carries them.
    """
    from transformers import AutoModelForCausalLM

    tcfg, lcfg = cfg.train, cfg.lora
    kwargs: dict[str, Any] = {"dtype": _dtype(tcfg.mode, precision),
                              "trust_remote_code": cfg.model.trust_remote_code, "use_safetensors": True}
    if tcfg.mode == "qlora":
        from transformers import BitsAndBytesConfig

        compute = torch.bfloat16 if precision == "bf16" else torch.float16
        kwargs.update(dtype=compute, device_map={"": local_rank}, quantization_config=BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type=lcfg.quant_type, bnb_4bit_use_double_quant=lcfg.double_quant,
            bnb_4bit_compute_dtype=compute, bnb_4bit_quant_storage=compute))
    folder = resolve_model(cfg.model.name)
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
    except (OSError, ValueError) as exc:
        raise load_error(folder, "model", exc) from None
    new_ids = [tokenizer.convert_tokens_to_ids(t) for t in added_tokens]
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))
    model.config.use_cache = False
    if tcfg.mode == "full":
        return model
    if tcfg.mode == "lora" and not tcfg.fsdp:  # FSDP flattens parameters and wants one dtype
        upcast_all_but_linears(model)
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if tcfg.mode == "qlora":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=tcfg.gradient_checkpointing,
                                                gradient_checkpointing_kwargs={"use_reentrant": False})
    peft_config = LoraConfig(r=lcfg.r, lora_alpha=lcfg.alpha or 2 * lcfg.r, lora_dropout=lcfg.dropout,
                             target_modules=lcfg.target_modules, use_rslora=lcfg.use_rslora, bias="none",
                             task_type="CAUSAL_LM", trainable_token_indices=new_ids or None)
    model = get_peft_model(model, peft_config)
    if device == "cpu":  # on CUDA, nn.Dropout already draws fast and keeps a bool mask
        lean_dropout(model, autocast=precision == "bf16")
    return model
