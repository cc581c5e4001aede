"""`sftpipe render`: read conversations, render + mask them, write rows, the mask report and the parity proof."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..commit import promote
from ..config import SftpipeConfig
from ..dataset import MaskReport, build_examples, build_renderer, read_data
from ..errors import ConfigError, TemplateError
from ..io import write_json, write_jsonl, write_records
from ..pack import group_by_length, pack
from ..parity import check_parity, save_tokenizer
from ..render import Example
from . import show


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


def example_row(ex: Example) -> dict[str, Any]:
    """The JSON row written for one example: ids, labels, text and the record's scalar fields."""
    meta = {k: v for k, v in ex.meta.items() if isinstance(v, (str, int, float, bool)) or v is None}
    return {**meta, "input_ids": ex.input_ids, "labels": ex.labels, "text": ex.text}


def packing_report(examples: list[Example], max_length: int, overflow: str = "drop", batch_size: int = 8
                   ) -> dict[str, Any]:
    """Efficiency of both batching strategies on these examples (real tokens / token slots)."""
    rows = [{"input_ids": e.input_ids, "labels": e.labels} for e in examples]
    _, packed = pack(rows, max_length, overflow=overflow)
    _, padded = group_by_length(rows, batch_size=batch_size, max_length=max_length, overflow=overflow)
    return {"packed": vars(packed), "padded": vars(padded)}


def run(cfg: SftpipeConfig, output: Path, *, split: str = "train", progress: bool = True) -> RenderResult:
    """Render the `data.<split>` files of `cfg` to `output` (.jsonl or .parquet) plus side reports."""
    paths = getattr(cfg.data, split)
    if not paths:
        raise ConfigError("config", [f"data.{split}: no input files; fix: set data.{split} or pass --input"])
    if Path(output).resolve() in {Path(p).resolve() for p in paths}:
        raise ConfigError("--output", [f"{output} is also an input (data.{split}); fix: write the rows to another "
                                       "file"])
    read = read_data(cfg.data, paths, f"data.{split}")
    renderer = build_renderer(cfg.model, cfg.template, cfg.render)
    examples, rejects, mask = build_examples(read.conversations, renderer, max_length=cfg.render.max_length,
                                             truncation=cfg.render.truncation, on_error=cfg.data.on_error,
                                             progress=show.tracker()("render", len(read.conversations))
                                             if progress else None)
    output = Path(output)
    stem = output.name.split(".")[0]
    names = {"rows": output.name, "rejects": f"{stem}.rejects.jsonl", "tokenizer": f"{stem}.tokenizer",
             "parity": f"{stem}.parity.json", "report": f"{stem}.mask_report.json"}
    all_rejects = [{**r, "stage": r.get("stage", "read")} for r in read.rejects] + rejects
    packing = packing_report(examples, cfg.render.max_length, cfg.render.overflow)
    report = {"records_in": read.n_in, "records_rendered": mask.conversations_kept,
              "records_rejected": len(all_rejects), "template": {"name": renderer.template.name,
                                                                 "sha256": renderer.template.sha256},
              "added_tokens": renderer.added_tokens, "mask": mask.to_dict(), "packing": packing}

    # Everything is written beside the output, proven, then moved into place with the marker last
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{stem}.", suffix=".render", dir=output.parent))
    try:
        write_records(staging / names["rows"], [example_row(e) for e in examples])
        if all_rejects:
            write_jsonl(staging / names["rejects"], all_rejects)
        parity = check_parity(save_tokenizer(renderer.tokenizer, staging / names["tokenizer"]), examples)
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
    rejects_path = output.with_name(names["rejects"]) if all_rejects else None
    report_path, parity_path = output.with_name(names["report"]), output.with_name(names["parity"])
    return RenderResult(output, report_path, parity_path, rejects_path, mask, packing, parity, read.n_in,
                        len(all_rejects))
