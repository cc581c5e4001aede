"""`sftpipe render` at the size users bring: records/s against the fast tokenizer's floor, and peak memory.

For each size, generated Harbor export rows (OpenAI messages plus extra fields; `build_export` in chunks of 50k,
ids prefixed by seed and chunk) are rendered by `sftpipe.stages.render.run` in a fresh process with an empty
dataset cache, into the Arrow dataset folder (the default output); the clock starts after transformers is
imported and a tokenizer loaded once (startup, not rendering), so it covers hashing, reading, rendering, writing,
the reports and the sampled parity proof. The floor is the same rendered texts through
`tokenizer(texts)` in batches, timed in the same process right after. Peak RSS is the render process's own
high-water mark and the largest of its pool workers'.

    .venv/bin/python bench/render_scale.py [--sizes 10000 100000] [--num-proc 0] [--legacy]
    .venv/bin/python bench/render_scale.py --sizes 1000000      # 1M: minutes per core, about 10 GB of disk
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHUNK = 50_000


def write_export(path: Path, n: int, seed: int) -> None:
    """`n` generated export rows as JSONL, built `CHUNK` at a time (ids unique across chunks)."""
    from sftpipe.demo.generate import build_export

    with open(path, "w", encoding="utf-8") as f:
        for k, start in enumerate(range(0, n, CHUNK)):
            for row in build_export(random.Random(seed * 1000 + k), min(CHUNK, n - start)):
                f.write(json.dumps({**row, "id": f"{seed}-{k}-{row['id']}"}) + "\n")


def floor(tokenizer, texts: list[str], batch: int = 10_000) -> float:
    """Seconds for the fast tokenizer to encode `texts` in batches (no offsets, no masks)."""
    t0 = time.perf_counter()
    for s in range(0, len(texts), batch):
        tokenizer(texts[s:s + batch], add_special_tokens=False)
    return time.perf_counter() - t0


def legacy(data: Path) -> float:
    """Records/s of the path before the tokenized dataset: read all, build_examples, parity on every example."""
    from sftpipe.config import load_config
    from sftpipe.dataset import build_examples, build_renderer, read_data
    from sftpipe.parity import check_parity, save_tokenizer

    cfg = load_config(overrides=[f"data.train={data}", "data.on_error=skip"])
    t0 = time.perf_counter()
    read = read_data(cfg.data, cfg.data.train, "data.train")
    renderer = build_renderer(cfg.model, cfg.template, cfg.render)
    examples, _, _ = build_examples(read.conversations, renderer, max_length=cfg.render.max_length, on_error="skip")
    with tempfile.TemporaryDirectory() as d:
        check_parity(save_tokenizer(renderer.tokenizer, Path(d) / "tok"), examples)
    return read.n_in / (time.perf_counter() - t0)


def child(data: Path, out: Path, num_proc: int) -> dict:
    """One measured render (run in a fresh process): timings, counts and peak RSS."""
    from sftpipe.config import load_config
    from sftpipe.dataset import build_renderer
    from sftpipe.stages.render import run
    from sftpipe.tokenized import load_or_build

    cfg = load_config(overrides=[f"data.train={data}", "data.on_error=skip", f"render.num_proc={num_proc}"])
    build_renderer(cfg.model, cfg.template, cfg.render)  # imports transformers: startup, not rendering
    t0 = time.perf_counter()
    result = run(cfg, out / "rendered", progress=False)
    seconds = time.perf_counter() - t0
    rss_render = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    renderer = build_renderer(cfg.model, cfg.template, cfg.render)
    tk = load_or_build(cfg.data, cfg.render, renderer, cfg.data.train, "data.train")
    texts = tk.column("text")
    t_floor = floor(renderer.tokenizer, texts)
    records_per_s, texts_per_s = result.records_in / seconds, len(texts) / t_floor
    return {"records": result.records_in, "examples": result.mask.examples, "tokens": result.mask.tokens,
            "seconds": round(seconds, 2), "records_per_s": round(records_per_s, 1),
            "floor_texts_per_s": round(texts_per_s, 1), "ratio_to_floor": round(records_per_s / texts_per_s, 3),
            "parity_checked": result.parity["examples_checked"], "parity_sample": result.parity["sample"],
            "peak_rss_mib": {"render_process": rss_render,
                             "largest_worker": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024,
                             "after_floor": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024},
            "dataset_mib": round(sum(f.stat().st_size for f in tk.folder.iterdir()) / 2**20, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--num-proc", type=int, default=0, help="render.num_proc (0: every core)")
    ap.add_argument("--legacy", action="store_true", help="also time the old path at the smallest size")
    ap.add_argument("--out", default="bench/results/render_scale.json")
    ap.add_argument("--child", nargs=2, metavar=("DATA", "OUT"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(Path(a.child[0]), Path(a.child[1]), a.num_proc)))
        return
    runs = {}
    load_before = os.getloadavg()[0]
    for n in a.sizes:
        with tempfile.TemporaryDirectory() as d:
            data = Path(d) / "export.jsonl"
            write_export(data, n, a.seed)
            env = {**os.environ, "SFTPIPE_TOKENIZED_CACHE": str(Path(d) / "cache")}
            cmd = [sys.executable, __file__, "--child", str(data), str(Path(d) / "out"), "--num-proc", str(a.num_proc)]
            res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            runs[n] = json.loads(res.stdout.strip().splitlines()[-1])
            if a.legacy and n == min(a.sizes):
                runs[n]["legacy_records_per_s"] = round(legacy(data), 1)
        print(n, json.dumps(runs[n]), flush=True)
    result = {"what": "sftpipe render (Arrow dataset output, sampled parity) records/s vs the fast tokenizer on the "
                      "same rendered texts (batched tokenizer(texts), same process)",
              "num_proc": a.num_proc, "runs": runs,
              "machine": {"cpu_count": os.cpu_count(), "loadavg_1min_before": round(load_before, 2)}}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
