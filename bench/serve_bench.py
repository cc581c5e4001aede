"""Serving and eval-generation benchmark on SmolLM2-135M-Instruct (prints ratios; asserts nothing).

1. `sftpipe serve` against `transformers serve` (5.23) in the same run, one server at a time, same model weights
   (a 1-step LoRA run on the embedded default with lr 1e-9, so both serve the base weights in fp32), same Harbor
   prompts, greedy, same max_tokens, through the `openai` client at concurrency 1, 8 and 32: generated tokens/s
   (usage.completion_tokens over wall time) and p50/p95 request latency. `transformers serve` runs with its
   sanitize flag (`--chat-template-kwargs '{"sanitize_control_tokens": true}'`, so control strings in content
   stay text, as ours) and, per concurrency, the faster of its two modes: `--continuous-batching` at every level,
   plain (one request at a time) at the lowest level only, since it cannot gain from concurrency.
2. Eval generation: the engine (`sftpipe.generate.generate`) against the batched `model.generate` the eval stage
   used before it (copied below as `old_generate`), same prompts, batch size and max_new_tokens.

    .venv/bin/python bench/serve_bench.py [--max-tokens 48] [--requests-per-slot 2]

Targets (issue 13, 2-core CPU): >= 2x transformers serve tokens/s at concurrency 8 with p95 no worse; eval
generation >= 2x the old batched generate. Results: bench/results/serve_bench.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx2 as httpx
import torch
from openai import AsyncOpenAI

from sftpipe.config import load_config
from sftpipe.demo.generate import generate as make_demo
from sftpipe.config.evaluate import EvalSetConfig
from sftpipe.evaluate.items import load_items
from sftpipe.generate import generate, stop_token_ids
from sftpipe.models import load_model, load_tokenizer, resolve_model
from sftpipe.render import ChatRenderer
from sftpipe.templates import load_template

EMBEDDED = "smollm2-135m-instruct"


def old_generate(model, renderer, prompts, *, max_new_tokens, batch_size):
    """The eval stage's generation before the engine: length-sorted batches of left-padded `model.generate`."""
    from transformers import GenerationConfig

    tok, stops = renderer.tokenizer, stop_token_ids(renderer)
    pad = tok.pad_token_id if tok.pad_token_id is not None else stops[0]
    encoded = [renderer.encode_prompt(p) for p in prompts]
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=stops, pad_token_id=pad)
    texts, total = [None] * len(prompts), 0
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        width = max(len(encoded[i]) for i in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):
            ids[row, width - len(encoded[i]):] = torch.tensor(encoded[i])
            mask[row, width - len(encoded[i]):] = 1
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
        for row, i in enumerate(batch):
            new = out[row, width:].tolist()
            end = next((k for k, t in enumerate(new) if t in stops), None)
            total += len(new) if end is None else end + 1
            texts[i] = tok.decode(new if end is None else new[:end], skip_special_tokens=True)
    return texts, total


def harbor_prompts(n: int) -> list[list[dict]]:
    with tempfile.TemporaryDirectory() as tmp:
        files = make_demo(Path(tmp), size="default", seed=0).files
        items = [it for key in ("compliance", "redteam")
                 for it in load_items(EvalSetConfig(name=key, path=str(files[key])))]
    random.Random(0).shuffle(items)
    return [it.prompt for it in items[:n]]


def make_run(root: Path) -> Path:
    """A complete sftpipe run of the embedded default whose LoRA barely moved (lr 1e-9): the base weights."""
    from sftpipe.stages.train import run as train

    rows = [{"messages": [{"role": "user", "content": f"What is {a} plus 2?"},
                          {"role": "assistant", "content": f"{a + 2}."}]} for a in range(8)]
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = load_config(overrides=[
        "name=bench", f"model.name={EMBEDDED}", f"data.train={root / 'train.jsonl'}", f"train.output_dir={root}",
        "train.report_to=none", "train.precision=fp32", "train.mode=lora", "train.max_steps=1", "train.lr=1e-9",
        "train.batch_size=4", "train.warmup_ratio=0", "render.max_length=64", "train.parity_examples=4"])
    return train(cfg, progress=False).run_dir


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], port: int) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{cmd[:3]} exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"{cmd[:3]} did not start")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


async def load(url: str, model: str, prompts: list[list[dict]], concurrency: int, max_tokens: int) -> dict:
    """`prompts` sent with at most `concurrency` in flight; tokens/s, latency percentiles and the replies."""
    client = AsyncOpenAI(base_url=url, api_key="bench", max_retries=0, timeout=900)
    gate = asyncio.Semaphore(concurrency)
    latencies, tokens, replies = [], 0, []

    async def one(p):
        nonlocal tokens
        async with gate:
            t0 = time.perf_counter()
            res = await client.chat.completions.create(model=model, messages=p, max_tokens=max_tokens,
                                                       temperature=0)
            latencies.append(time.perf_counter() - t0)
            tokens += res.usage.completion_tokens
            return res.choices[0].message.content

    t0 = time.perf_counter()
    replies = await asyncio.gather(*[one(p) for p in prompts])
    wall = time.perf_counter() - t0
    await client.close()
    q = statistics.quantiles(latencies, n=20, method="inclusive") if len(latencies) > 1 else latencies * 19
    return {"requests": len(prompts), "completion_tokens": tokens, "seconds": round(wall, 2),
            "tokens_per_s": round(tokens / wall, 2), "p50_s": round(statistics.median(latencies), 2),
            "p95_s": round(q[18], 2), "replies": replies}


def bench_server(name: str, cmd: list[str], port: int, model: str, prompts, levels, per_slot, max_tokens) -> dict:
    proc = start(cmd, port)
    out = {}
    try:
        url = f"http://127.0.0.1:{port}/v1"
        asyncio.run(load(url, model, prompts[:2], 2, 4))  # warm-up
        for c in levels:
            out[str(c)] = asyncio.run(load(url, model, prompts[: max(4, c * per_slot)], c, max_tokens))
            r = out[str(c)]
            print(f"{name:<28} c={c:<3} {r['tokens_per_s']:7.1f} tok/s  p50 {r['p50_s']:6.2f}s  p95 {r['p95_s']:6.2f}s",
                  flush=True)
    finally:
        stop(proc)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--requests-per-slot", type=int, default=2)
    ap.add_argument("--levels", default="1,8,32")
    ap.add_argument("--eval-prompts", type=int, default=16)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "serve_bench.json")
    args = ap.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    prompts = harbor_prompts(max(levels) * args.requests_per_slot)
    threads = torch.get_num_threads()
    result: dict = {"model": EMBEDDED, "device": "cpu", "cpu": platform.processor() or platform.machine(),
                    "torch_threads": threads, "max_tokens": args.max_tokens, "load_avg_start": os.getloadavg()}

    # 2. eval generation: engine vs the old batched generate (same process, same model, interleaved)
    tok = load_tokenizer(EMBEDDED)
    renderer = ChatRenderer(tok, load_template("model", tok))
    model = load_model(EMBEDDED).eval()
    batch = prompts[: args.eval_prompts]
    generate(model, renderer, batch[:2], max_new_tokens=4)
    old_generate(model, renderer, batch[:2], max_new_tokens=4, batch_size=2)
    t0 = time.perf_counter()
    old_texts, old_tokens = old_generate(model, renderer, batch, max_new_tokens=args.max_tokens, batch_size=16)
    old_s = time.perf_counter() - t0
    outputs, stats = generate(model, renderer, batch, max_new_tokens=args.max_tokens, batch_size=16)
    result["eval_generation"] = {
        "prompts": len(batch), "batch_size": 16, "old_batched_generate": {
            "new_tokens": old_tokens, "seconds": round(old_s, 2), "tokens_per_s": round(old_tokens / old_s, 2)},
        "engine": stats.to_dict(), "ratio": round(stats.tokens_per_s / (old_tokens / old_s), 2),
        "identical_replies": sum(a == b.text for a, b in zip(old_texts, outputs)), "target": ">= 2x"}
    print(f"eval generation: old {old_tokens / old_s:.1f} tok/s, engine {stats.tokens_per_s:.1f} tok/s -> "
          f"{result['eval_generation']['ratio']}x; identical {result['eval_generation']['identical_replies']}/"
          f"{len(batch)}", flush=True)
    del model

    # 1. servers, one at a time
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = make_run(Path(tmp))
        py = [sys.executable, "-m"]
        port = free_port()
        ours = bench_server("sftpipe serve", [*py, "sftpipe.cli", "serve", str(run_dir), "--port", str(port),
                                              "--set", "serve.max_batch=32"], port, "bench", prompts, levels,
                            args.requests_per_slot, args.max_tokens)
        theirs = {}
        for mode, mode_levels in (("plain", levels[:1]), ("continuous-batching", levels)):
            port = free_port()
            cmd = [str(Path(sys.executable).parent / "transformers"), "serve", str(resolve_model(EMBEDDED)),
                   "--port", str(port), "--host", "127.0.0.1", "--device", "cpu", "--dtype", "float32",
                   "--chat-template-kwargs", '{"sanitize_control_tokens": true}']
            if mode != "plain":
                cmd.append("--continuous-batching")
            theirs[mode] = bench_server(f"transformers serve ({mode})", cmd, port, str(resolve_model(EMBEDDED)),
                                        prompts, mode_levels, args.requests_per_slot, args.max_tokens)
    result["sftpipe_serve"] = {c: {k: v for k, v in r.items() if k != "replies"} for c, r in ours.items()}
    result["transformers_serve"] = {m: {c: {k: v for k, v in r.items() if k != "replies"} for c, r in t.items()}
                                    for m, t in theirs.items()}
    ratios = {}
    for c in map(str, levels):
        best = max((m for m in theirs if c in theirs[m]), key=lambda m: theirs[m][c]["tokens_per_s"])
        ref = theirs[best][c]
        ratios[c] = {"baseline_mode": best,
                     "tokens_per_s_ratio": round(ours[c]["tokens_per_s"] / ref["tokens_per_s"], 2),
                     "p95_ratio": round(ours[c]["p95_s"] / ref["p95_s"], 2),
                     "identical_replies": sum(a == b for a, b in zip(ours[c]["replies"], ref["replies"]))}
        print(f"c={c}: sftpipe serve / transformers serve ({best}) = {ratios[c]['tokens_per_s_ratio']}x tok/s, "
              f"p95 {ratios[c]['p95_ratio']}x; identical replies {ratios[c]['identical_replies']}/"
              f"{len(ours[c]['replies'])}", flush=True)
    result["ratios"] = ratios
    result["targets"] = {"serve_c8": ">= 2x tokens/s, p95 ratio <= 1", "eval": ">= 2x"}
    result["load_avg_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
