"""`sftpipe export RUN --format hf|vllm|gguf --out DIR [--dtype bf16|fp16|fp32, gguf also q8_0]`: a deployment
bundle of a run.

Read top to bottom: load the run through `sftpipe.runs` and fold its adapter in -> write the bundle into a folder
beside DIR (hf: safetensors in the dtype, tokenizer with the exact template inline, generation_config whose eos
holds every end-of-turn id, model card; vllm: the same plus the launch command; gguf: one .gguf file written by
llama.cpp's converter from the hf bundle, its template and eos/eot ids checked in its metadata, read back with
transformers' GGUF loader and checked) -> rename it to DIR.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError, ModelError
from ..export.formats import check_dtype, writer
from ..export.merged import atomic_folder, merged_model
from ..runs import resolve


@dataclass
class ExportResult:
    """Where the bundle went and what it records (export.json)."""

    output: Path
    format: str
    record: dict = field(default_factory=dict)


def run(ref: str | Path, out: str | Path, *, format: str = "hf", dtype: str = "bf16",
        overwrite: bool = False) -> ExportResult:
    """Export the run `ref` (runs/<name> or one of its checkpoint folders) as `format` (a name in
    `sftpipe.export.formats`) into `out`."""
    write = writer(format)
    check_dtype(format, dtype)  # a dtype the format does not take fails before the model loads
    try:
        found = resolve(ref)
    except ModelError as e:
        raise ConfigError("export", [str(e)]) from None
    run_dir, checkpoint = found.run_dir, found.checkpoint
    out = Path(out)
    model, tokenizer, info = merged_model(run_dir, checkpoint)
    with atomic_folder(out, overwrite=overwrite) as tmp:
        record = write(tmp, model, tokenizer, run_dir, info, dtype=dtype, checkpoint=checkpoint)
    return ExportResult(out, format, record)
