"""The merge core shared by `sftpipe merge` and `sftpipe export`: a run's weights with the LoRA adapter folded in,
saved with the run's tokenizer into a folder that appears whole (written beside, renamed into place)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..commit import staged_folder
from ..errors import ConfigError, ModelError
from ..io import _UMASK
from ..parity import save_tokenizer
from ..runs import load_run

DTYPES = ("bf16", "fp16", "fp32")


def torch_dtype(name: str):
    """The torch dtype for bf16 | fp16 | fp32."""
    import torch

    if name not in DTYPES:
        raise ConfigError("--dtype", [f"{name!r} is not a dtype; allowed: {', '.join(DTYPES)}"])
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[name]


def merged_model(run_dir: Path, checkpoint: str | None = None, *, dtype=None, require_adapter: bool = False):
    """(model, tokenizer, run info): the run's adapter folded into its base (full-weight runs as they are)."""
    model, tokenizer, info = load_run(run_dir, checkpoint, dtype=dtype)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    elif require_adapter:
        raise ModelError(f"{run_dir} holds full weights (mode {info.mode!r}), not an adapter, so there is "
                         "nothing to merge; fix: load the run folder directly with transformers")
    model.config.use_cache = True
    return model, tokenizer, info


@contextmanager
def atomic_folder(output: Path, *, overwrite: bool) -> Iterator[Path]:
    """A temporary folder beside `output`, renamed to `output` when the block succeeds (removed if it fails)."""
    if output.exists() and (not output.is_dir() or any(output.iterdir())) and not overwrite:
        raise ModelError(f"{output} exists and is not empty; fix: pass --overwrite or another output folder")
    with staged_folder(output) as tmp:  # mode per the user's umask (mkdtemp alone gives 0700)
        yield tmp
        for path in tmp.rglob("*"):  # safetensors writes through a private temp file (0600)
            path.chmod((0o777 if path.is_dir() else 0o666) & ~_UMASK)


def save_model(model, tokenizer, folder: Path, dtype=None) -> int:
    """safetensors weights (in `dtype` if given) + the tokenizer with its template inline; returns the parameters."""
    if dtype is not None:
        model = model.to(dtype)
    model.save_pretrained(folder, safe_serialization=True)
    save_tokenizer(tokenizer, folder)
    return sum(p.numel() for p in model.parameters())
