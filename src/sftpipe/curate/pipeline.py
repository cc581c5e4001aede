"""`sftpipe curate`: read raw exports, run the configured stages in order, write splits, rejects and a report.

Order: read -> normalize -> pii -> dedup -> filters -> policy -> decontaminate -> quality -> mix -> split. Outputs in
out_dir: one `<split>.jsonl` per split (OpenAI messages records with their extra fields), `rejected.jsonl`
(every dropped record with stage, reason and details) and `report.json` (counts in/out per stage and reason,
seconds per stage, stage stats, the content hash of each output and the hash's definition). For every stage,
records in = kept + rejected. Records rejected before the pii stage are PII-redacted in rejected.jsonl too.
Reader rejects: `parse` (the line is not JSON) or `invalid` (not a valid conversation, e.g. an empty reply),
with the reader's error code in the details.

It runs in three phases, so memory stays bounded and every core (or a Ray cluster) works:
1. the inputs are cut into shards; one task per shard (sftpipe.curate.engine, on datatrove's executors) runs the
   per-record stages and writes its rows and the arrays the global stages need (sftpipe.curate.shard);
2. the global stages decide over those arrays (sftpipe.curate.decide);
3. the rows are streamed once more into the output files.
The shards live in a work folder beside out_dir, named by the inputs and the config: a run that was killed is
rerun by running it again (finished tasks are skipped); a finished run removes it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any


from .. import curated
from ..config.curate import CurateConfig
from ..io import sha256_file
from .decide import Decisions, Stream, decide
from .decontam import Decontaminate
from .dedup import Dedup
from .engine import EngineConfig, cores, plan_shards, run_tasks
from .filters import Filters
from .mix import tag
from .normalize import Normalize
from .pii import Pii
from .policy import Policy
from .quality import Quality
from .shard import NOT_DROPPED, READ, ShardTask, Views, task_rows
from .split import Split

if TYPE_CHECKING:
    from ..dataset import Tracker

MIN_SHARD = 256 * 2**10  # bytes: below this a task costs more to start than it saves


@dataclass
class CurateResult:
    """What a curate run wrote: the folder, counts, output paths, content hashes and the report."""

    out_dir: Path
    counts: dict[str, int] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    hashes: dict[str, str] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)


def build_stages(cfg: CurateConfig, tokenizer=None, *, mix: bool = False) -> list:
    """The enabled stages in pipeline order up to quality: per-record stage objects, and the names of the global
    stages (dedup, quality) where they sit. The mix stream has no quality stage (the top share is of the main
    data only)."""
    s = cfg.strict
    stages: list = []
    if cfg.normalize.enabled:
        stages.append(Normalize(cfg.normalize, s))
    if cfg.pii.enabled:
        stages.append(Pii(cfg.pii, s))
    if cfg.dedup.enabled:
        stages.append("dedup")
    if cfg.filters.enabled:
        stages.append(Filters(cfg.filters, tokenizer, s))
    if cfg.policy.enabled:
        stages.append(Policy(cfg.policy, s))
    if cfg.decontaminate.enabled:
        stages.append(Decontaminate(cfg.decontaminate, s))
    if cfg.quality.enabled and not mix:
        stages.append("quality")
    return stages


def _label(stage) -> str:
    return stage if isinstance(stage, str) else stage.name


def work_folder(out_dir: Path, cfg: CurateConfig, inputs: list[dict], extra: Any) -> Path:
    """The work folder of this run: beside out_dir, named by the inputs' hashes and every setting that changes
    the shards (not the executor, workers or progress)."""
    settings = cfg.model_dump(mode="json", exclude={"workers", "executor", "progress", "out_dir"})
    key = hashlib.sha256(json.dumps([inputs, settings, extra], sort_keys=True).encode()).hexdigest()[:16]
    return out_dir.parent / f".{out_dir.name}.work-{key}"


def run_curate(inputs: list[Path], cfg: CurateConfig, out_dir: Path, *, format: str = "auto",
               column_map: dict | None = None, tokenizer=None, progress: Tracker | None = None) -> CurateResult:
    """Curate `inputs` into `out_dir` as configured; see the module docstring for the outputs. `tokenizer` (a
    tokenizer or a model reference) counts tokens for the length filter; None estimates ceil(chars / 4).
    `progress(label, total)` returns the callback that counts finished shard tasks, then records written."""
    out_dir = Path(out_dir)
    curated.check_out_dir(out_dir, inputs)
    t_start = time.perf_counter()
    hashed = [{"path": str(p), "sha256": sha256_file(p)} for p in inputs]
    mix_input = [{"path": cfg.mix.source, "sha256": sha256_file(cfg.mix.source)}] if cfg.mix.enabled else []
    work = work_folder(out_dir, cfg, hashed + mix_input, [format, column_map, str(tokenizer)])
    engine = EngineConfig.from_curate(cfg)
    split = Split(cfg.split, cfg.strict)
    views = Views(Dedup(cfg.dedup, cfg.strict) if cfg.dedup.enabled else None,
                  *(split.views() if cfg.split.enabled else (None, None)))
    streams = [_stream("", inputs, build_stages(cfg, tokenizer), views, work, engine, cfg, format, column_map,
                       progress)]
    if cfg.mix.enabled:
        streams.append(_stream("mix/", [Path(cfg.mix.source)], build_stages(cfg, tokenizer, mix=True), views, work,
                               engine, cfg, cfg.mix.format, cfg.mix.column_map or None, progress))
    quality = Quality(cfg.quality, cfg.strict) if cfg.quality.enabled else None
    decisions = decide(cfg, streams[0][0], streams[1][0] if cfg.mix.enabled else None, quality)
    result = _write(out_dir, cfg, hashed, streams, decisions, progress, t_start)
    shutil.rmtree(work, ignore_errors=True)
    return result


def _stream(prefix: str, paths: list[Path], stages: list, views: Views, work: Path, engine: EngineConfig,
            cfg: CurateConfig, format: str, column_map: dict | None, progress) -> tuple[Stream, list]:
    """Run one stream's shard tasks; returns the stream and its stage list."""
    total = sum(Path(p).stat().st_size for p in paths)  # at least two shards per worker, when the input allows
    workers = engine.workers or cores()
    shards = plan_shards(paths, min(cfg.executor.shard_mb * 2**20, max(MIN_SHARD, total // (2 * workers))))
    folder = work / (prefix.strip("/") or "main")
    folder.mkdir(parents=True, exist_ok=True)  # one stream's task outputs
    task = ShardTask(shards, stages=[None if isinstance(s, str) else s for s in stages],
                     globals_at=[s if isinstance(s, str) else None for s in stages], views=views, work=folder,
                     format=format, column_map=column_map, strict=cfg.strict,
                     scrub=cfg.pii if cfg.pii.enabled else None, quality="quality" in stages,
                     stratum=cfg.split.by, prefix=prefix)
    name = prefix.strip("/") or "main"
    run_tasks(task, len(shards), engine, work, name, progress(f"{name} shards", len(shards)) if progress else None)
    positions = {s: k for k, s in enumerate(stages) if isinstance(s, str)}
    return Stream(prefix, [task.stem(i) for i in range(len(shards))], positions), stages


class _Tally:
    """Per stage label: records in and out, drop reasons, extra counters, in stage order."""

    def __init__(self):
        self.n_in: Counter = Counter()
        self.n_out: Counter = Counter()
        self.dropped: dict[str, Counter] = defaultdict(Counter)
        self.stats: dict[str, Counter] = defaultdict(Counter)

    def row(self, labels: list[str], stop: int, row: dict, reason: str | None) -> None:
        """Count a row that went through `labels[:stop + 1]` (dropped at `stop` with `reason`, if any)."""
        extras = row.get("extras", {})
        for k, label in enumerate(labels[:stop + 1]):
            self.n_in[label] += 1
            if k < stop or reason is None:
                self.n_out[label] += 1
            extra = extras.get(label.split("/")[-1])
            if extra:
                self.stats[label].update(extra)
        if reason is not None:
            self.dropped[labels[stop]][reason] += 1
            if labels[stop].split("/")[-1] == "read":
                self.stats[labels[stop]][f"error_{row['drop']['details']['error']}"] += 1


def _fate(stream: Stream, stages: list, k: int, row: dict, decisions: Decisions) -> tuple[int, dict | None]:
    """(position in the stream's labels where row `k` stops, its rejected.jsonl line or None when it passed
    every stage of its stream)."""
    at = row.get("at", NOT_DROPPED)
    if at == READ:
        return 0, row["drop"]
    dropped = decisions.drops[stream.prefix].get(k)
    if dropped is not None and dropped[0] != "mix":
        stage, reason, details = dropped
        name = stage.split("/")[-1]
        if details.get("parts", 0) is None:  # quality: the score's parts were kept with the row
            details = {**details, "parts": row["parts"]}
        return stages.index(name) + 1, _line(row, stage, reason, details, row["states"][row["reached"][name]])
    if at != NOT_DROPPED:
        return at + 1, row["drop"]
    return len(stages) + 1, None


def _line(row: dict, stage: str, reason: str, details: dict, record: dict) -> dict:
    """A rejected.jsonl line."""
    return {"stage": stage, "reason": reason, "details": details,
            "source": {"path": row["src"][0], "line": row["src"][1]}, "record": record}


def _write(out_dir: Path, cfg: CurateConfig, inputs: list[dict], streams: list, decisions: Decisions,
           progress, t_start: float) -> CurateResult:
    """Stream every row into its split file or rejected.jsonl (grouped by stage, each in input order), then the
    report; the folder is swapped in whole."""
    split_names = list(cfg.split.ratios()) if cfg.split.enabled else ["train"]
    report: dict[str, Any] = {}

    def write(tmp: Path) -> dict[str, str]:
        tally, seconds, order = _Tally(), Counter(), []
        outs = {name: _Out(tmp / f"{name}.jsonl") for name in split_names}
        rejected: dict[str, _Out] = {}
        total = sum(len(a) for stream, _ in streams for a in stream.arrays("at"))
        tick = progress("write", total) if progress else None
        for stream, stages in streams:
            labels = [stream.prefix + "read"] + [stream.prefix + _label(s) for s in stages]
            order.extend(labels)
            for part in stream.arrays("seconds"):
                seconds.update({stream.prefix + k: v for k, v in json.loads(str(part)).items()})
            for k, row in enumerate(r for stem in stream.stems for r in task_rows(stem.with_suffix(".rows.jsonl"))):
                stop, line = _fate(stream, stages, k, row, decisions)
                tally.row(labels, min(stop, len(labels) - 1), row, line["reason"] if line else None)
                if line is None and k in decisions.drops[stream.prefix]:  # the mix stage did not sample it
                    line = _line(row, *decisions.drops[stream.prefix][k], row["states"][row["final"]])
                    tally.dropped["mix"][line["reason"]] += 1
                if line is not None:
                    part = rejected.get(line["stage"]) or rejected.setdefault(
                        line["stage"], _Out(tmp / f".rejected.{len(rejected)}.part"))
                    part.add(line)
                else:
                    record = row["states"][row["final"]]
                    name = decisions.splits[stream.prefix][k] if cfg.split.enabled else "train"
                    if stream.prefix:  # a picked record of the mix stream
                        record = {**tag({k: v for k, v in record.items() if k != "messages"}, cfg.mix,
                                        cfg.split.by), "messages": record["messages"]}
                    outs[name].add(record)
                if tick:
                    tick(1)
        order += (["mix"] if cfg.mix.enabled else []) + (["split"] if cfg.split.enabled else [])
        hashes = {f"{name}.jsonl": out.close() for name, out in outs.items()}
        hashes[curated.REJECTED] = _concat(tmp / curated.REJECTED, [rejected[s] for s in order if s in rejected])
        report.update(_report(cfg, inputs, tally, order, seconds, decisions, {n: o.n for n, o in outs.items()},
                              t_start))
        return hashes

    hashes = curated.write_folder(out_dir, write, report)
    files = {name: out_dir / name for name in [*hashes, curated.REPORT]}
    return CurateResult(out_dir=out_dir, counts=report["counts"], files=files, hashes=hashes, report=report)


def _report(cfg: CurateConfig, inputs: list[dict], tally: _Tally, order: list[str], seconds: Counter,
            decisions: Decisions, sizes: dict[str, int], t_start: float) -> dict[str, Any]:
    """The report, once every row is written."""
    stages = []
    for label in order:
        name, main = label.split("/")[-1], "/" not in label
        if label == "mix":
            n_in, n_out = decisions.mixed["in"], decisions.mixed["out"]
        elif label == "split":
            n_in = n_out = sum(sizes.values())
        else:
            n_in, n_out = tally.n_in[label], tally.n_out[label]
        if name in ("dedup", "quality", "mix", "split"):
            stats = dict(decisions.stats.get(name, {})) if main else {}
            secs = decisions.seconds.get(name, 0.0) if main else 0.0
        else:
            stats, secs = dict(tally.stats.get(label, {})), seconds.get(label, 0.0)
        stages.append({"stage": label, "in": n_in, "out": n_out, "dropped": dict(tally.dropped.get(label, {})),
                       "seconds": round(float(secs), 3), "stats": stats})
    rejected = sum(sum(c.values()) for c in tally.dropped.values())
    by_reason = Counter({f"{label}/{reason}": n for label, c in tally.dropped.items() for reason, n in c.items()})
    return {"counts": {"in": sum(s["in"] for s in stages if s["stage"] in ("read", "mix/read")),
                       "kept": sum(sizes.values()), "rejected": rejected, **sizes},
            "rejected_by_reason": dict(sorted(by_reason.items())), "stages": stages,
            "seconds_total": round(time.perf_counter() - t_start, 3), "inputs": inputs,
            "hash_definition": curated.HASH_DEFINITION + ". report.json itself is not hashed (it holds timings).",
            "config": cfg.model_dump(mode="json")}


class _Out:
    """A JSON Lines file written one record at a time, with its content hash."""

    def __init__(self, path: Path):
        self.path, self.n = path, 0
        self.f = open(path, "wb")  # noqa: SIM115 (closed by close(), once every record is in)
        self.h = hashlib.sha256()

    def add(self, record: dict) -> None:
        self.f.write(json.dumps(record, ensure_ascii=False).encode("utf-8") + b"\n")
        self.h.update(curated.canonical_line(record))
        self.n += 1

    def close(self) -> str:
        self.f.close()
        return self.h.hexdigest()


def _concat(path: Path, parts: list[_Out]) -> str:
    """Join the parts into `path` in order; returns the content hash of the whole."""
    h = hashlib.sha256()
    with open(path, "wb") as out:
        for part in parts:
            part.close()
            with open(part.path, "rb") as f:
                for line in f:
                    out.write(line)
                    h.update(curated.canonical_line(json.loads(line)))
            part.path.unlink()
    return h.hexdigest()
