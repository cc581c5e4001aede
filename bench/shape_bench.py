"""Memory creep from free sequence lengths on a CPU: padded rows at their own width against widths rounded up to a
multiple of 64 (sftpipe's CPU default, `train.pad_to_multiple_of`).

oneDNN (bf16 matmuls) and ATen's CPU flash attention compile and cache kernels per tensor shape, so every new
sequence length adds cached kernels that are never freed. Each side runs in its own subprocess: SmolLM2-135M with
the LoRA setup `sftpipe train` uses, at the precision it picks on this CPU, one forward+backward+AdamW step per row
of a seeded random length (the same lengths on both sides), collated by sftpipe's `ItemCollator`. After every step
the process runs the cyclic GC and `malloc_trim(0)`, so what stays resident is what something still holds. Reported
per side: resident growth per step (after the first 5 steps), peak RSS (VmHWM), seconds per step and distinct widths.

    .venv/bin/python bench/shape_bench.py [--steps 40] [--multiple 64]
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import random
import subprocess
import sys
import time
from pathlib import Path

from train_bench import status_mb

HERE = Path(__file__).resolve().parent


def worker(multiple: int, steps: int, seed: int) -> dict:
    import torch

    from sftpipe.config import load_config
    from sftpipe.models import load_tokenizer
    from sftpipe.train.data import ItemCollator
    from sftpipe.train.load import choose_precision, load_for_training

    cfg = load_config(overrides=["name=bench", "data.train=/dev/null"])
    tokenizer = load_tokenizer("smollm2-135m-instruct")
    precision = choose_precision("auto", "cpu")
    model = load_for_training(cfg, tokenizer, [], device="cpu", precision=precision).train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    collate = ItemCollator("padded", tokenizer.pad_token_id, multiple)
    rng, libc = random.Random(seed), ctypes.CDLL("libc.so.6")
    resident, widths, t0 = [], set(), time.perf_counter()
    for _ in range(steps):
        n = rng.randint(300, 800)
        batch = collate([{"rows": [{"input_ids": [rng.randrange(1000, 40000) for _ in range(n)],
                                    "labels": [-100] * (n // 2) + [1] * (n - n // 2)}]}])
        widths.add(batch["input_ids"].shape[1])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                         labels=batch["labels"], use_cache=False).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        del loss, batch
        gc.collect()
        libc.malloc_trim(0)
        resident.append(status_mb("RssAnon"))
    return {"pad_to_multiple_of": multiple, "precision": precision, "steps": steps, "distinct_widths": len(widths),
            "growth_mb_per_step": round((resident[-1] - resident[4]) / (steps - 5), 2),
            "resident_mb_first_last": [round(resident[0]), round(resident[-1])],
            "peak_rss_mb": round(status_mb("VmHWM"), 1), "s_per_step": round((time.perf_counter() - t0) / steps, 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--multiple", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(HERE / "results" / "shape_bench.json"))
    ap.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker is not None:
        return print(json.dumps(worker(a.worker, a.steps, a.seed)))
    sides = {}
    for name, multiple in (("free widths (baseline)", 1), (f"multiple of {a.multiple}", a.multiple)):
        proc = subprocess.run([sys.executable, __file__, "--worker", str(multiple), "--steps", str(a.steps),
                               "--seed", str(a.seed)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"{name} failed:\n{proc.stderr[-4000:]}")
        sides[name] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"{name}: {sides[name]}", flush=True)
    base, ours = sides.values()
    result = {"sides": sides, "peak_rss_ratio": round(ours["peak_rss_mb"] / base["peak_rss_mb"], 3),
              "s_per_step_ratio": round(ours["s_per_step"] / base["s_per_step"], 3)}
    print(json.dumps({k: v for k, v in result.items() if k != "sides"}))
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
