"""Rendered examples as one Arrow dataset on disk, built once per data, template, tokenizer and render options.

`load_or_build` streams the data files through the renderer in chunks (a process pool over every core when the
input is large), writes each chunk as an Arrow record batch into shards of at most `SHARD_ROWS` examples, and
commits the folder atomically: written beside, renamed into place, the marker (every file's size and sha256)
inside it written last. The folder sits in the cache under a key over everything that decides the tokens, so a
second call with the same key memory-maps it and renders nothing. Memory stays bounded by a few chunks.

    cache/<key>/  shard-00000.arrow ...  rejects.jsonl  sftpipe_tokenized.json
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import chain, islice
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from .commit import manifest_ok, read_manifest, staged_folder, write_manifest
from .config import DataConfig, RenderConfig
from .conversation import Conversation
from .curated import files_hash
from .dataset import MaskReport, Tracker, check_not_empty, iter_examples
from .gcpause import no_cyclic_gc
from .io import require_files, write_jsonl
from .models import cache_dir
from .readers import ReadResult, stream_conversations
from .render import ChatRenderer, Example

FORMAT = 1  # raise when the columns or their meaning change
MARKER = "sftpipe_tokenized.json"
CHUNK = 512  # conversations per task
SHARD_ROWS = 100_000  # examples per Arrow file
POOL_MIN = 4 * CHUNK  # fewer conversations render in this process (a pool costs more than it saves)
RENDER_OPTIONS = ("max_length", "truncation", "train_on", "reasoning")  # every render option that changes tokens
READ_OPTIONS = ("format", "column_map", "on_error")
_CODE = ("render.py", "dataset.py", "tokenized.py", "readers.py", "conversation.py", "templates")

SCHEMA = pa.schema([
    ("input_ids", pa.list_(pa.int32())), ("labels", pa.list_(pa.int32())), ("length", pa.int32()),
    ("n_trained", pa.int32()), ("category", pa.string()), ("eot_positions", pa.list_(pa.int32())),
    ("eot_ids", pa.list_(pa.int32())), ("trained_messages", pa.int32()), ("boundary_tokens", pa.int32()),
    ("prompt_chars", pa.int32()), ("turn", pa.int32()), ("escaped_control", pa.bool_()),
    ("truncated", pa.bool_()),
    ("meta", pa.string()), ("text", pa.large_string()), ("messages", pa.large_string())])


def tokenized_cache_dir() -> Path:
    """Where built datasets live (`$SFTPIPE_TOKENIZED_CACHE`, default `<sftpipe cache>/tokenized`)."""
    return Path(os.environ.get("SFTPIPE_TOKENIZED_CACHE") or cache_dir() / "tokenized")


def code_digest(names: tuple[str, ...] = _CODE) -> str:
    """sha256 of the source files (or folders) `names` under the package that turn records into tokens, so a code
    change never reuses old tokens."""
    root, h = Path(__file__).parent, hashlib.sha256()
    for name in names:
        for p in sorted((root / name).rglob("*.py")) if (root / name).is_dir() else [root / name]:
            h.update(p.name.encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def tokenizer_sha256(renderer: ChatRenderer) -> str:
    """sha256 of the tokenizer's full definition (vocabulary, merges, normalizer, special tokens)."""
    return hashlib.sha256(renderer.tokenizer.backend_tokenizer.to_str().encode("utf-8")).hexdigest()


def key_parts(data_hash: str, renderer: ChatRenderer, render: RenderConfig, data: DataConfig) -> dict[str, Any]:
    """Everything that decides a dataset's tokens: data content, template, tokenizer, read and render options."""
    return {"format": FORMAT, "data": data_hash, "template_sha256": renderer.template.sha256,
            "tokenizer_sha256": tokenizer_sha256(renderer), "code_sha256": code_digest(),
            "render": {k: getattr(render, k) for k in RENDER_OPTIONS},
            "read": {k: getattr(data, k) for k in READ_OPTIONS}}


def cache_key(parts: dict[str, Any]) -> str:
    """The cache folder name for `key_parts(...)`."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode("utf-8")).hexdigest()[:32]


def _scalars(meta: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in meta.items() if isinstance(v, (str, int, float, bool)) or v is None}


def to_batch(examples: list[Example]) -> pa.RecordBatch:
    """Examples as one Arrow record batch of `SCHEMA` (meta: the record's scalar fields, as JSON)."""
    metas = [_scalars(e.meta) for e in examples]
    cols = {"input_ids": [e.input_ids for e in examples], "labels": [e.labels for e in examples],
            "length": [len(e.input_ids) for e in examples], "n_trained": [e.n_trained for e in examples],
            "category": [_category(m) for m in metas], "eot_positions": [e.eot_positions for e in examples],
            "eot_ids": [e.eot_ids for e in examples], "trained_messages": [e.trained_messages for e in examples],
            "boundary_tokens": [e.boundary_tokens for e in examples],
            "prompt_chars": [e.prompt_chars for e in examples], "turn": [m.get("turn") for m in metas],
            "escaped_control": [e.escaped_control for e in examples], "truncated": [e.truncated for e in examples],
            "meta": [json.dumps(m) for m in metas], "text": [e.text for e in examples],
            "messages": [json.dumps(e.messages) for e in examples]}
    return pa.RecordBatch.from_arrays([pa.array(cols[f.name], f.type) for f in SCHEMA], schema=SCHEMA)


def _category(meta: dict[str, Any]) -> str | None:
    value = meta.get("category")
    return None if value is None else str(value)


def to_example(row: dict[str, Any]) -> Example:
    """One dataset row back as the Example it was built from (meta: the record's scalar fields)."""
    return Example(row["input_ids"], row["labels"], row["text"], json.loads(row["messages"]), json.loads(row["meta"]),
                   prompt_chars=row["prompt_chars"], trained_messages=row["trained_messages"],
                   eot_positions=row["eot_positions"], boundary_tokens=row["boundary_tokens"],
                   escaped_control=row["escaped_control"], eot_ids=row["eot_ids"], truncated=row["truncated"])


@dataclass
class Tokenized:
    """A built dataset: the memory-mapped examples (`datasets.Dataset`), its mask report and rejects."""

    folder: Path
    dataset: Any
    mask: MaskReport
    rejects: list[dict]
    records_in: int
    built: bool  # rendered by this call (False: memory-mapped from the cache)

    def __len__(self) -> int:
        return len(self.dataset)

    def examples(self, indices: Iterable[int] | None = None) -> list[Example]:
        """The examples at `indices` (all when None), in that order."""
        table = self.dataset.data.table
        rows = (table if indices is None else table.take(pa.array(list(indices), pa.int64()))).to_pylist()
        return [to_example(row) for row in rows]

    def token_examples(self) -> list[Example]:
        """Every example with what batching and training read: ids and labels (int32 numpy views into the
        memory-mapped shards, not copies), end-of-turn positions and ids, and meta {"row": its row, "category":
        its record's category when it has one}; no text or messages."""
        cols = [self.views("input_ids"), self.views("labels")]
        cols += [self.column(n) for n in ("eot_positions", "eot_ids", "category")]
        with no_cyclic_gc():
            return [Example(ids, labels, "", meta={"row": i} if c is None else {"row": i, "category": c},
                            eot_positions=pos, eot_ids=eot)
                    for i, (ids, labels, pos, eot, c) in enumerate(zip(*cols))]

    def views(self, name: str) -> Iterator[np.ndarray]:
        """Each row's value of a list column as a numpy view into the mapped file (no copy)."""
        for chunk in self.dataset.data.column(name).chunks:
            values, offsets = chunk.values.to_numpy(zero_copy_only=True), chunk.offsets.to_numpy()
            for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist()):
                yield values[a:b]

    def column(self, name: str) -> list:
        """One column as a Python list, read from the memory-mapped table."""
        return self.dataset.data.column(name).to_pylist()

    def parity_indices(self, n: int, seed: int = 0) -> tuple[list[int], dict[str, int]]:
        """The rows the parity proof checks: every example that was truncated, escapes control strings in its
        content, is one turn of a split conversation or has a reply edge tokenized unlike serving, plus `n` drawn
        at random (seeded) from the rest; returned sorted, with the counts of each kind."""
        import pyarrow.compute as pc

        table = self.dataset.data
        required = (pc.or_(pc.or_(table.column("truncated"), table.column("escaped_control")),
                           pc.or_(pc.is_valid(table.column("turn")), pc.greater(table.column("boundary_tokens"), 0))))
        flags = required.to_numpy(zero_copy_only=False)
        must, rest = np.flatnonzero(flags).tolist(), np.flatnonzero(~flags)
        drawn = [int(rest[i]) for i in random.Random(seed).sample(range(len(rest)), min(n, len(rest)))]
        return sorted([*must, *drawn]), {"required": len(must), "drawn": len(drawn), "examples": len(table)}


def load(folder: Path) -> Tokenized | None:
    """The complete dataset in `folder`, memory-mapped; None when it is missing or was never committed."""
    if not manifest_ok(folder, MARKER):
        return None
    from datasets import Dataset, concatenate_datasets

    marker = read_manifest(folder, MARKER)
    dataset = concatenate_datasets([Dataset.from_file(str(folder / name)) for name in marker["shards"]])
    rejects = [json.loads(line) for line in (folder / "rejects.jsonl").read_text("utf-8").splitlines()] \
        if (folder / "rejects.jsonl").exists() else []
    mask = MaskReport(**{k: v for k, v in marker["mask"].items() if k not in ("trained_share", "eot_coverage")})
    return Tokenized(folder, dataset, mask, rejects, marker["records_in"], built=False)


_renderer: ChatRenderer | None = None  # the renderer a forked pool worker inherits


def _adopt(renderer: ChatRenderer) -> None:
    global _renderer
    _renderer = renderer


Job = tuple[list[Conversation], int, str, str]  # (conversations, max_length, truncation, on_error)


def _render_chunk(job: Job) -> tuple[pa.RecordBatch, MaskReport, list[dict]]:
    """Render one chunk of conversations with the adopted renderer: (record batch, its mask report, rejects)."""
    convs, max_length, truncation, on_error = job
    report, rejects = MaskReport(truncation_policy=truncation, max_length=max_length), []
    with no_cyclic_gc():
        examples = list(iter_examples(convs, _renderer, report, rejects, on_error=on_error))
        return to_batch(examples), report, rejects


def _rendered_chunks(jobs: Iterator[Job], renderer: ChatRenderer, num_proc: int
                     ) -> Iterator[tuple[pa.RecordBatch, MaskReport, list[dict]]]:
    """Rendered chunks in input order: in this process until POOL_MIN conversations are seen, then (if the input
    goes on and `num_proc` > 1) in a pool of forked workers that inherit the renderer."""
    _adopt(renderer)
    head = list(islice(jobs, POOL_MIN // CHUNK))
    if num_proc <= 1 or len(head) < POOL_MIN // CHUNK:
        yield from map(_render_chunk, chain(head, jobs))
        return
    with multiprocessing.get_context("fork").Pool(num_proc, initializer=_adopt, initargs=(renderer,)) as pool:
        yield from pool.imap(_render_chunk, chain(head, jobs))


def build(folder: Path, convs: Iterable[Conversation], renderer: ChatRenderer, render: RenderConfig, read: ReadResult,
          *, on_error: str, num_proc: int | None = None, fields: dict[str, Any] | None = None,
          progress: Callable[[int], None] | None = None) -> None:
    """Render `convs` (streamed from `read`, which counts rows and collects read rejects) into an Arrow dataset at
    `folder`, committed whole: a failure leaves nothing there. `progress(n)` counts rows as chunks finish."""
    mask, rejects = MaskReport(truncation_policy=render.truncation, max_length=render.max_length), []
    jobs = ((chunk, render.max_length, render.truncation, on_error) for chunk in _chunks(convs, CHUNK))
    shards: list[str] = []
    with staged_folder(folder) as tmp, no_cyclic_gc():  # reading makes many objects and no cycles
        writer, rows, seen = None, 0, 0
        for batch, report, bad in _rendered_chunks(jobs, renderer, num_proc or os.cpu_count() or 1):
            if writer is None or rows >= SHARD_ROWS:
                if writer is not None:
                    writer.close()
                shards.append(f"shard-{len(shards):05d}.arrow")
                writer, rows = pa.ipc.new_stream(str(tmp / shards[-1]), SCHEMA), 0
            writer.write_batch(batch)
            rows += batch.num_rows
            mask.add(report)
            rejects += bad
            if progress is not None:
                progress(report.conversations_in + len(read.rejects) - seen)
                seen = len(read.rejects)
        if writer is None:  # no conversation: one empty shard, so the dataset still has its columns
            shards.append("shard-00000.arrow")
            writer = pa.ipc.new_stream(str(tmp / shards[-1]), SCHEMA)
        writer.close()
        all_rejects = [{**r, "stage": r.get("stage", "read")} for r in read.rejects] + rejects
        if all_rejects:
            write_jsonl(tmp / "rejects.jsonl", all_rejects)
        write_manifest(tmp, MARKER, stage="tokenized", shards=shards, mask=mask.to_dict(), records_in=read.n_in,
                       examples=mask.examples, **(fields or {}))


def _chunks(convs: Iterable[Conversation], n: int) -> Iterator[list[Conversation]]:
    it = iter(convs)
    while chunk := list(islice(it, n)):
        yield chunk


def count_rows(paths: list[str]) -> int:
    """Rows in JSONL (non-blank lines) and Parquet files (metadata), for a progress total."""
    import pyarrow.parquet as pq

    total = 0
    for p in paths:
        if Path(p).suffix.lower() == ".parquet":
            total += pq.ParquetFile(p).metadata.num_rows
        else:
            with open(p, "rb") as f:
                total += sum(1 for line in f if line.strip())
    return total


def load_or_build(data: DataConfig, render: RenderConfig, renderer: ChatRenderer, paths: list[str], key: str, *,
                  data_hash: str | None = None, progress: Tracker | None = None) -> Tokenized:
    """The dataset of the files `paths` (config key `key`, e.g. data.train) rendered by `renderer` under the
    `render` options: memory-mapped from the cache when built before with the same key, else built there."""
    require_files(paths, key)
    parts = key_parts(data_hash or files_hash(paths), renderer, render, data)
    folder = tokenized_cache_dir() / cache_key(parts)
    found = load(folder)
    if found is None:
        read = ReadResult()
        convs = stream_conversations(paths, read, format=data.format, column_map=data.column_map or None,
                                     on_error=data.on_error)
        build(folder, convs, renderer, render, read, on_error=data.on_error, num_proc=render.num_proc,
              fields={"key": parts}, progress=progress(f"render {key}", count_rows(paths)) if progress else None)
        found = load(folder)
        found.built = True
    check_not_empty(data, paths, key, found.records_in)
    return found
