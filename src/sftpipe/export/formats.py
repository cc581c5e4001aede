"""The export formats `sftpipe export --format` knows: each name maps to its writer, by dotted path.

A writer is `write(folder, model, tokenizer, run_dir, info, *, dtype, checkpoint) -> dict`: it fills the empty
staging `folder` with the bundle, writes export.json there and returns its contents. Writers are imported only
when one is used, so reading the names (the CLI's --format help) loads no torch. To add a format, write its
module in this package and add one line to `WRITERS`.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module

from ..errors import ConfigError

# format -> (writer as "module:function" under sftpipe.export, a note for --format's help)
WRITERS: dict[str, tuple[str, str]] = {
    "hf": ("bundle:write_hf", ""),
    "vllm": ("bundle:write_vllm", ""),
    "gguf": ("gguf:write_gguf", "llama.cpp's converter"),
}
FORMATS = tuple(WRITERS)
# --dtype values a format takes beyond bf16 | fp16 | fp32 (sftpipe.export.merged.DTYPES), which every one takes
EXTRA_DTYPES: dict[str, tuple[str, ...]] = {"gguf": ("q8_0",)}


def formats_help() -> str:
    """The format names with their notes, for the CLI.

    >>> formats_help()
    "hf | vllm | gguf (llama.cpp's converter)"
    """
    return " | ".join(f"{name} ({note})" if note else name for name, (_, note) in WRITERS.items())


def writer(format: str) -> Callable[..., dict]:
    """The writer of `format`; ConfigError naming the formats when there is none."""
    if format not in WRITERS:
        raise ConfigError("--format", [f"{format!r} is not a format; allowed: {', '.join(FORMATS)}"])
    module, function = WRITERS[format][0].split(":")
    return getattr(import_module(f".{module}", __package__), function)


def check_dtype(format: str, dtype: str) -> None:
    """ConfigError naming the dtypes `format` takes (and the format a dtype belongs to) unless it takes `dtype`.

    >>> check_dtype("gguf", "q8_0")
    >>> check_dtype("hf", "q8_0")
    Traceback (most recent call last):
    sftpipe.errors.ConfigError: --dtype: 'q8_0' is not a dtype for --format hf; allowed: bf16, fp16, fp32; fix: ...
    """
    from .merged import DTYPES

    allowed = DTYPES + EXTRA_DTYPES.get(format, ())
    if dtype not in allowed:
        other = [name for name, extra in EXTRA_DTYPES.items() if dtype in extra]
        fix = "pass one of them" + (f", or --format {other[0]} for {dtype}" if other else "")
        raise ConfigError("--dtype", [f"{dtype!r} is not a dtype for --format {format}; allowed: "
                                      f"{', '.join(allowed)}; fix: {fix}"])
