"""`sftpipe render`: read conversations, render + mask them into the cached Arrow dataset (sftpipe.tokenized),
write it (a `datasets` folder, or .jsonl / .parquet rows), the mask report and the sampled parity proof."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..commit import promote
from ..config import SftpipeConfig
from ..dataset import MaskReport, build_renderer
from ..errors import ConfigError, TemplateError
from ..io import JSONL_SUFFIXES, PARQUET_SUFFIXES, write_json, write_jsonl, write_records
from ..pack import group_lengths, pack_lengths
from ..parity import check_parity, save_tokenizer
from ..tokenized import Tokenized, load_or_build
from . import show


ROW_SUFFIXES = JSONL_SUFFIXES + PARQUET_SUFFIXES


@dataclass
class RenderResult:
    """What `render` wrote and measured."""

    output: Path
    report_path: Path
    parity_path: Path
    rejects_path: Path | None
    mask: MaskReport
    packing: dict[str, Any]
    parity: dict[str, Any]
    records_in: int
    rejected: int


def example_row(row: dict[str, Any]) -> dict[str, Any]:
    """The JSON row written for one dataset row: the record's scalar fields, ids, labels and text."""
    return {**json.loads(row["meta"]), "input_ids": row["input_ids"], "labels": row["labels"], "text": row["text"]}


def packing_report(lengths: list[int], max_length: int, batch_size: int = 8) -> dict[str, Any]:
    """Efficiency of both batching strategies on examples of these lengths (real tokens / token slots); every
    rendered example fits max_length, so no overflow policy applies."""
    _, packed = pack_lengths(lengths, max_length)
    _, padded = group_lengths(lengths, batch_size=batch_size)
    return {"packed": vars(packed), "padded": vars(padded)}


def write_rows(tk: Tokenized, path: Path) -> None:
    """The dataset at `path`: a `datasets` folder (load_from_disk), or rows in a .jsonl / .parquet file."""
    if path.suffix.lower() not in ROW_SUFFIXES:
        from datasets import disable_progress_bars, enable_progress_bars, is_progress_bar_enabled

        shown = is_progress_bar_enabled()
        disable_progress_bars()  # our console shows progress, not the library's
        try:
            tk.dataset.save_to_disk(str(path), num_shards=len(tk.dataset.cache_files))
        finally:
            if shown:
                enable_progress_bars()
        return
    rows = (example_row(r) for batch in tk.dataset.iter(batch_size=1024)
            for r in (dict(zip(batch, v)) for v in zip(*batch.values())))
    write_records(path, rows)


def run(cfg: SftpipeConfig, output: Path, *, split: str = "train", progress: bool = True) -> RenderResult:
    """Render the `data.<split>` files of `cfg` to `output` (a `datasets` folder, or .jsonl / .parquet rows)
    plus side reports."""
    paths = getattr(cfg.data, split)
    if not paths:
        raise ConfigError("config", [f"data.{split}: no input files; fix: set data.{split} or pass --input"])
    if Path(output).resolve() in {Path(p).resolve() for p in paths}:
        raise ConfigError("--output", [f"{output} is also an input (data.{split}); fix: write the rows to another "
                                       "file"])
    renderer = build_renderer(cfg.model, cfg.template, cfg.render)
    tk = load_or_build(cfg.data, cfg.render, renderer, list(paths), f"data.{split}",
                       progress=show.tracker() if progress else None)
    mask = tk.mask
    output = Path(output)
    stem = output.name.split(".")[0]
    names = {"rows": output.name, "rejects": f"{stem}.rejects.jsonl", "tokenizer": f"{stem}.tokenizer",
             "parity": f"{stem}.parity.json", "report": f"{stem}.mask_report.json"}
    packing = packing_report(tk.column("length"), cfg.render.max_length)
    report = {"records_in": tk.records_in, "records_rendered": mask.conversations_kept,
              "records_rejected": len(tk.rejects), "template": {"name": renderer.template.name,
                                                                "sha256": renderer.template.sha256},
              "added_tokens": renderer.added_tokens, "mask": mask.to_dict(), "packing": packing}

    # Everything is written beside the output, proven, then moved into place with the marker last
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{stem}.", suffix=".render", dir=output.parent))
    try:
        write_rows(tk, staging / names["rows"])
        if tk.rejects:
            write_jsonl(staging / names["rejects"], tk.rejects)
        indices, sample = tk.parity_indices(cfg.render.parity_examples)
        parity = {**check_parity(save_tokenizer(renderer.tokenizer, staging / names["tokenizer"]),
                                 tk.examples(indices)), "sample": sample,
                  "tokenizer_dir": str(output.with_name(names["tokenizer"]))}  # where it lands, not the staging
        write_json(staging / names["parity"], parity)
        write_json(staging / names["report"], report)
        if parity["text_mismatches"] or parity["token_mismatches"]:
            failed = output.with_name(f"{stem}.parity-failed.json")
            os.replace(staging / names["parity"], failed)
            raise TemplateError(f"parity failed for {parity['text_mismatches']} text / {parity['token_mismatches']} "
                                f"token mismatches (see {failed}); the saved tokenizer would serve a different "
                                "render than training saw, so nothing was written")
        promote(staging, output.parent, list(names.values()), f"{stem}.render.json", stage="render", version=1)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    rejects_path = output.with_name(names["rejects"]) if tk.rejects else None
    report_path, parity_path = output.with_name(names["report"]), output.with_name(names["parity"])
    return RenderResult(output, report_path, parity_path, rejects_path, mask, packing, parity, tk.records_in,
                        len(tk.rejects))
