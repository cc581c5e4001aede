"""Load what a run folder holds: its model (adapter on its base, or full weights), tokenizer and template.

Layout: `runs/<name>/` holds a PEFT adapter (`adapter_config.json` + `adapter_model.safetensors`) or full weights
(`config.json` + `model.safetensors`), the tokenizer with the training template, and run.json naming the base
model; `checkpoints/checkpoint-<step>/` the same per saved step. Only safetensors are read.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ModelError
from ..models import load_error, resolve_model
from .checkpoints import complete_checkpoints
from .folder import require_complete
from .info import RunInfo


def checkpoint_names(run_dir: str | Path) -> list[str]:
    """Names of a run's complete checkpoints (completion marker checked), by step."""
    return [p.name for p in complete_checkpoints(Path(run_dir) / "checkpoints")]


def weights_folder(run_dir: Path, checkpoint: str | Path | None) -> Path:
    """The folder holding the weights: the run itself, or one checkpoint (`checkpoint-<step>` or a path)."""
    if checkpoint is None:
        return run_dir
    folder = Path(checkpoint) if Path(checkpoint).is_dir() else run_dir / "checkpoints" / str(checkpoint)
    if not folder.is_dir():
        saved = sorted(p.name for p in (run_dir / "checkpoints").glob("checkpoint-*"))
        raise ModelError(f"checkpoint {str(checkpoint)!r} not found in {run_dir}; saved: {saved or 'none'}")
    return folder


def load_base(info: RunInfo, tokenizer_size: int | None = None, *, dtype=None):
    """The base model a run was trained from, resized to the run's vocabulary (run.json `vocab_size`, else grown
    to the tokenizer's size)."""
    from transformers import AutoModelForCausalLM

    folder = resolve_model(info.base_model)
    try:
        base = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, use_safetensors=True,
                                                    trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise load_error(folder, "model", exc) from None
    current = base.get_input_embeddings().weight.shape[0]
    size = info.vocab_size or (tokenizer_size if tokenizer_size and tokenizer_size > current else None)
    if size and size != current:
        base.resize_token_embeddings(size)
    return base


def load_tokenizer(run_dir: str | Path):
    """The run's tokenizer (with the exact training template in its chat_template)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(Path(run_dir))
    except (OSError, ValueError, TypeError) as exc:
        raise load_error(Path(run_dir), "tokenizer", exc) from None


def load_run(run_dir: str | Path, checkpoint: str | Path | None = None, *, dtype=None, merge: bool = False):
    """(model, tokenizer, run_info) of a run's final weights or one of its checkpoints: the base model plus the PEFT
    adapter (folded into the base weights with `merge`, which makes inference faster), or the full weights. The
    model is in eval mode."""
    from transformers import AutoModelForCausalLM

    run_dir = Path(run_dir)
    info = require_complete(run_dir)
    folder = weights_folder(run_dir, checkpoint)
    tokenizer = load_tokenizer(run_dir)
    if (folder / "adapter_config.json").is_file():
        from peft import PeftModel

        model = PeftModel.from_pretrained(load_base(info, len(tokenizer), dtype=dtype), folder)
        if merge:
            model = model.merge_and_unload()
    elif (folder / "config.json").is_file():
        try:
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, use_safetensors=True)
        except (OSError, ValueError) as exc:
            raise load_error(folder, "model", exc) from None
    else:
        raise ModelError(f"{folder} holds neither an adapter (adapter_config.json) nor full weights (config.json); "
                         "fix: train to completion, or pass a checkpoint that was saved")
    return model.eval(), tokenizer, info
