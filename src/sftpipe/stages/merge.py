"""`sftpipe merge`: fold a run's LoRA adapter into the base weights and save a plain transformers model.

The output folder holds `config.json` + `model.safetensors`, the run's tokenizer (same chat template in
tokenizer_config.json), its `generation_config.json` and `merge.json` (where it came from). It is written to a
temporary folder next to the target and renamed into place, so a crash never leaves a half-merged model.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from ..export.merged import atomic_folder, merged_model, save_model
from ..io import sha256_file, write_json
from ..runs import weights_folder


@dataclass
class MergeResult:
    """Where the merged model went and what it came from."""

    output: Path
    run_dir: Path
    checkpoint: str | None
    base_model: str
    parameters: int


def run(run_dir: str | Path, output: str | Path | None = None, *, checkpoint: str | None = None,
        overwrite: bool = False, dtype=None) -> MergeResult:
    """Merge the adapter of `run_dir` (or of one checkpoint) into its base; default output `run_dir/merged`."""
    run_dir = Path(run_dir)
    merged, tokenizer, info = merged_model(run_dir, checkpoint, dtype=dtype, require_adapter=True)
    output = Path(output) if output is not None else run_dir / "merged"
    with atomic_folder(output, overwrite=overwrite) as tmp:
        parameters = save_model(merged, tokenizer, tmp)
        if (run_dir / "generation_config.json").is_file():
            shutil.copy2(run_dir / "generation_config.json", tmp / "generation_config.json")
        adapter = weights_folder(run_dir, checkpoint)
        write_json(tmp / "merge.json", {
            "run_dir": str(run_dir), "checkpoint": checkpoint, "base_model": info.base_model,
            "adapter_sha256": sha256_file(adapter / "adapter_model.safetensors"),
            "template": info.template.model_dump(exclude={"source"}) if info.template else None})
    return MergeResult(output, run_dir, checkpoint, info.base_model, parameters)
