"""`sftpipe curate`: read raw exports, run the configured stages in order, write splits, rejects and a report.

Order: read -> normalize -> pii -> dedup -> filters -> policy -> decontaminate -> quality -> mix -> split. Outputs in
out_dir: one `<split>.jsonl` per split (OpenAI messages records with their extra fields), `rejected.jsonl`
(every dropped record with stage, reason and details) and `report.json` (counts in/out per stage and reason,
seconds per stage, stage stats, the content hash of each output and the hash's definition). For every stage,
records in = kept + rejected. Records rejected before the pii stage are PII-redacted in rejected.jsonl too.
Reader rejects: `parse` (the line is not JSON) or `invalid` (not a valid conversation, e.g. an empty reply),
with the reader's error code in the details.
"""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..conversation import Conversation, Source
from .. import curated
from ..io import sha256_file
from ..readers import read_conversations
from .base import Drop
from ..config.curate import CurateConfig
from .decontam import Decontaminate
from .dedup import Dedup
from .filters import Filters
from .mix import Mix
from .normalize import Normalize
from .pii import Pii, redact_text
from .policy import Policy
from .quality import Quality
from .split import Split

if TYPE_CHECKING:
    from ..dataset import Tracker

MIN_PARALLEL = 2000  # below this many records a worker pool costs more than it saves


@dataclass
class CurateResult:
    """What a curate run wrote: the folder, counts, output paths, content hashes and the report."""

    out_dir: Path
    counts: dict[str, int] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    hashes: dict[str, str] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)


def build_stages(cfg: CurateConfig, tokenizer=None) -> list:
    """The enabled per-stream stages in pipeline order (mix and split are added by `run_curate`)."""
    s = cfg.strict
    stages = []
    if cfg.normalize.enabled:
        stages.append(Normalize(cfg.normalize, s))
    if cfg.pii.enabled:
        stages.append(Pii(cfg.pii, s))
    if cfg.dedup.enabled:
        stages.append(Dedup(cfg.dedup, s))
    if cfg.filters.enabled:
        stages.append(Filters(cfg.filters, tokenizer, s))
    if cfg.policy.enabled:
        stages.append(Policy(cfg.policy, s))
    if cfg.decontaminate.enabled:
        stages.append(Decontaminate(cfg.decontaminate, s))
    if cfg.quality.enabled:
        stages.append(Quality(cfg.quality, s))
    return stages


PARSE_ERRORS = ("parse", "invalid_utf8")  # reader reasons for a line that is not a JSON object at all


def read_stream(paths: list, *, format: str, column_map: dict | None, strict: bool, stage: str = "read"):
    """(conversations, drops, rows read). A row that is not JSON is dropped as `parse`; a JSON record that is
    not a valid conversation (e.g. an empty reply) as `invalid`; details hold the reader's error code. Strict
    mode raises the first error instead."""
    res = read_conversations([Path(p) for p in paths], format=format, column_map=column_map,
                             on_error="fail" if strict else "skip")
    drops = [Drop(None, stage, "parse" if r["reason"] in PARSE_ERRORS else "invalid",
                  {"error": r["reason"], "message": r["error"]}, source=Source(r["path"], r["line"]),
                  raw=r["record"]) for r in res.rejects]
    return res.conversations, drops, res.n_in


def _read_report(label: str, n_in: int, n_out: int, drops: list[Drop], seconds: float) -> dict:
    return {"stage": label, "in": n_in, "out": n_out, "dropped": dict(Counter(d.reason for d in drops)),
            "seconds": round(seconds, 3), "stats": dict(Counter(f"error_{d.details['error']}" for d in drops))}


def _run(stage, convs: list, label: str, pool, progress: Tracker | None, report: list, drops: list,
         n_in: int | None = None) -> list:
    """Run one stage, record its counts, reasons, seconds and stats; return the kept records."""
    t0 = time.perf_counter()
    stage.stats.clear()  # stage objects are reused for the mix stream; report each run's own stats
    kept, dropped = stage.apply(convs, pool=pool, progress=progress(label, len(convs)) if progress else None)
    n_in = len(convs) if n_in is None else n_in
    assert n_in == len(kept) + len(dropped), f"{label}: {n_in} in != {len(kept)} kept + {len(dropped)} dropped"
    for d in dropped:
        d.stage = label
    drops += dropped
    report.append({"stage": label, "in": n_in, "out": len(kept), "dropped": dict(Counter(d.reason for d in dropped)),
                   "seconds": round(time.perf_counter() - t0, 3), "stats": dict(getattr(stage, "stats", {}))})
    return kept


def _scrub(obj: Any, cfg: CurateConfig) -> Any:
    """Redact PII in every string of a raw record (for records rejected before the pii stage)."""
    if isinstance(obj, str):
        return redact_text(obj, cfg.pii.types, cfg.pii.phone_region)[0]
    if isinstance(obj, list):
        return [_scrub(x, cfg) for x in obj]
    if isinstance(obj, dict):
        return {k: _scrub(v, cfg) for k, v in obj.items()}
    return obj


def _rejected_records(drops: list[Drop], cfg: CurateConfig) -> list[dict]:
    out = []
    for d in drops:
        rec = d.to_record()
        if cfg.pii.enabled and d.stage.split("/")[-1] in ("read", "normalize"):
            rec["record"] = _scrub(rec["record"], cfg)
        out.append(rec)
    return out


def run_curate(inputs: list[Path], cfg: CurateConfig, out_dir: Path, *, format: str = "auto",
               column_map: dict | None = None, tokenizer=None, progress: Tracker | None = None) -> CurateResult:
    """Curate `inputs` into `out_dir` as configured; see the module docstring for the outputs. `tokenizer` (a
    tokenizer or a model reference) counts tokens for the length filter; None estimates ceil(chars / 4).
    `progress(stage, total)` returns the callback that counts each stage's records."""
    out_dir = Path(out_dir)
    curated.check_out_dir(out_dir, inputs)
    t_start = time.perf_counter()
    stages_report: list[dict] = []
    drops: list[Drop] = []
    stages = build_stages(cfg, tokenizer)
    with ExitStack() as stack:
        t0 = time.perf_counter()
        convs, read_drops, n_read = read_stream(inputs, format=format, column_map=column_map, strict=cfg.strict)
        drops += read_drops
        stages_report.append(_read_report("read", n_read, len(convs), read_drops, time.perf_counter() - t0))
        pool = None
        if cfg.workers > 1 and len(convs) >= MIN_PARALLEL:
            pool = stack.enter_context(ProcessPoolExecutor(cfg.workers, mp_context=get_context("spawn")))
        for stage in stages:
            convs = _run(stage, convs, stage.name, pool, progress, stages_report, drops)
        if cfg.mix.enabled:
            t0 = time.perf_counter()
            general, mix_drops, n_mix = read_stream([cfg.mix.source], format=cfg.mix.format,
                                                    column_map=cfg.mix.column_map or None, strict=cfg.strict,
                                                    stage="mix/read")
            drops += mix_drops
            stages_report.append(_read_report("mix/read", n_mix, len(general), mix_drops, time.perf_counter() - t0))
            for stage in stages:
                if stage.name != "quality":  # the top share is taken of the main data only
                    general = _run(stage, general, f"mix/{stage.name}", pool, progress, stages_report, drops)
            mix = Mix(cfg.mix, general, cfg.split.by)
            convs = _run(mix, convs, "mix", pool, progress, stages_report, drops, n_in=mix.n_in(convs))
        split = Split(cfg.split, cfg.strict)
        if cfg.split.enabled:
            convs = _run(split, convs, "split", pool, progress, stages_report, drops)
            splits = split.assignment
        else:
            splits = {"train": convs}
    return _write(out_dir, cfg, inputs, splits, drops, stages_report, time.perf_counter() - t_start)


def _write(out_dir: Path, cfg: CurateConfig, inputs: list, splits: dict[str, list[Conversation]],
           drops: list[Drop], stages_report: list[dict], seconds: float) -> CurateResult:
    """Write the splits, rejects and report into a folder beside `out_dir`, the manifest last, then swap it in."""
    hashes: dict[str, str] = {}
    outputs = {f"{name}.jsonl": [c.to_record() for c in convs] for name, convs in splits.items()}
    outputs[curated.REJECTED] = _rejected_records(drops, cfg)
    n_in = sum(s["in"] for s in stages_report if s["stage"] in ("read", "mix/read"))
    counts = {"in": n_in, "kept": sum(len(v) for v in splits.values()), "rejected": len(drops),
              **{name: len(v) for name, v in splits.items()}}
    report = {
        "counts": counts,
        "rejected_by_reason": dict(sorted(Counter(f"{d.stage}/{d.reason}" for d in drops).items())),
        "stages": stages_report,
        "seconds_total": round(seconds, 3),
        "inputs": [{"path": str(p), "sha256": sha256_file(p)} for p in inputs],
        "hashes": hashes,
        "hash_definition": curated.HASH_DEFINITION + ". report.json itself is not hashed (it holds timings).",
        "config": cfg.model_dump(mode="json"),
    }
    curated.write_folder(out_dir, outputs, report)
    files = {name: out_dir / name for name in [*outputs, curated.REPORT]}
    return CurateResult(out_dir=out_dir, counts=counts, files=files, hashes=hashes, report=report)
