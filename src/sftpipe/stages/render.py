"""`sftpipe render`: read conversations, render + mask them, write rows, the mask report and the parity proof."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import SftpipeConfig
from ..dataset import MaskReport, build_examples, build_renderer
from ..errors import ConfigError, TemplateError
from ..io import write_json, write_jsonl, write_records
from ..pack import group_by_length, pack
from ..parity import check_parity, save_tokenizer
from ..readers import read_conversations
from . import show
from ..render import Example


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
    read = read_conversations(paths, format=cfg.data.format, column_map=cfg.data.column_map or None,
                              on_error=cfg.data.on_error)
    renderer = build_renderer(cfg)
    examples, rejects, mask = build_examples(read.conversations, renderer, max_length=cfg.render.max_length,
                                             truncation=cfg.render.truncation, on_error=cfg.data.on_error,
                                             progress=show.tracker()("render", len(read.conversations))
                                             if progress else None)
    output = Path(output)
    stem = output.name.split(".")[0]
    write_records(output, [example_row(e) for e in examples])
    all_rejects = [{**r, "stage": r.get("stage", "read")} for r in read.rejects] + rejects
    rejects_path = None
    if all_rejects:
        rejects_path = output.with_name(f"{stem}.rejects.jsonl")
        write_jsonl(rejects_path, all_rejects)
    tok_dir = save_tokenizer(renderer.tokenizer, output.with_name(f"{stem}.tokenizer"))
    parity = check_parity(tok_dir, examples)
    parity_path = output.with_name(f"{stem}.parity.json")
    write_json(parity_path, parity)
    packing = packing_report(examples, cfg.render.max_length, cfg.render.overflow)
    report = {"records_in": read.n_in, "records_rendered": mask.conversations_kept,
              "records_rejected": len(all_rejects), "template": {"name": renderer.template.name,
                                                                 "sha256": renderer.template.sha256},
              "added_tokens": renderer.added_tokens, "mask": mask.to_dict(), "packing": packing}
    report_path = output.with_name(f"{stem}.mask_report.json")
    write_json(report_path, report)
    if parity["text_mismatches"] or parity["token_mismatches"]:
        raise TemplateError(f"parity failed for {parity['text_mismatches']} text / {parity['token_mismatches']} "
                            f"token mismatches (see {parity_path}); the saved tokenizer would serve a different "
                            "render than training saw")
    return RenderResult(output, report_path, parity_path, rejects_path, mask, packing, parity, read.n_in,
                        len(all_rejects))
