"""One measured `sftpipe render` run, in a fresh process (bench/scale_bench.py runs it per size): records/s
against the fast tokenizer's floor, and the parity sample.

The renderer is built once before the clock starts (importing transformers and loading a tokenizer is startup,
not rendering), so the time covers hashing, reading, rendering, writing the Arrow dataset (the default output),
the reports and the sampled parity proof. The floor is the same rendered texts through `tokenizer(texts)` in
batches, timed in the same process right after.

    .venv/bin/python bench/render_scale.py DATA.jsonl OUT_DIR [--num-proc 0] [--legacy]
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

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
    ap.add_argument("data", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--num-proc", type=int, default=0, help="render.num_proc (0: every core)")
    ap.add_argument("--legacy", action="store_true", help="also time the path before the tokenized dataset")
    a = ap.parse_args()
    result = child(a.data, a.out, a.num_proc)
    if a.legacy:
        result["legacy_records_per_s"] = round(legacy(a.data), 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
