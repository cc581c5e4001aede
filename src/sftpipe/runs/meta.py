"""What a run records about itself besides metrics: library versions, the source commit, and the generation config
that makes a served model stop at the template's end-of-turn token(s)."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path
from typing import Any


def git_commit() -> dict[str, Any] | None:
    """The sftpipe source tree's git commit and whether it has uncommitted changes (None outside git)."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": head, "dirty": bool(dirty)}


def versions() -> dict[str, str]:
    """Versions of Python and the libraries that shape training."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("sftpipe", "torch", "transformers", "peft", "accelerate", "bitsandbytes"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def generation_config(base: Path, tokenizer, eot_ids: list[int], pad_id: int):
    """The base model's generation config with eos = the template's end-of-turn id(s) plus the tokenizer's eos."""
    from transformers import GenerationConfig

    gen = (GenerationConfig.from_pretrained(base) if (base / "generation_config.json").is_file()
           else GenerationConfig())
    eos = sorted(set(eot_ids) | ({tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()))
    gen.eos_token_id = eos[0] if len(eos) == 1 else eos
    gen.pad_token_id = pad_id
    if tokenizer.bos_token_id is not None:
        gen.bos_token_id = tokenizer.bos_token_id
    return gen
