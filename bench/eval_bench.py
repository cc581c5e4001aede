"""Eval generation benchmark: the eval stage's batched generation against plain `model.generate`, one prompt at a
time, on SmolLM2-135M-Instruct (prints the ratio; asserts nothing).

Same model, same process, same Harbor eval prompts (compliance + red-team, serving render from
`ChatRenderer.encode_prompt`), same greedy decoding, same max_new_tokens and stop tokens. Throughput is generated
tokens (up to and including the stop token) per second of wall time. Target: >= 3x through batching. Also
reports how many replies are identical both ways (padding can flip a near-tie argmax in float arithmetic).

    .venv/bin/python bench/eval_bench.py [--prompts 48] [--max-new-tokens 64] [--batch-size 16] [--device cpu]

Results are merged into bench/results/eval_bench.json under the device name.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from sftpipe.demo.generate import generate as make_demo
from sftpipe.config.evaluate import EvalSetConfig
from sftpipe.generate import generate, stop_token_ids
from sftpipe.evaluate.items import load_items
from sftpipe.models import load_model, load_tokenizer
from sftpipe.render import ChatRenderer
from sftpipe.templates import load_template


def prompts(n: int) -> list[list[dict]]:
    """The first n Harbor eval prompts (compliance, then red-team), default demo size."""
    with tempfile.TemporaryDirectory() as tmp:
        files = make_demo(Path(tmp), size="default", seed=0).files
        items = [it for key in ("compliance", "redteam")
                 for it in load_items(EvalSetConfig(name=key, path=str(files[key])))]
    return [it.prompt for it in items[:n]]


def one_at_a_time(model, renderer: ChatRenderer, batch: list[list[dict]], max_new_tokens: int) -> tuple[list, int]:
    """Plain `model.generate` per prompt with the same ids, stops and greedy decoding; (texts, new tokens)."""
    tok, stops = renderer.tokenizer, stop_token_ids(renderer)
    device = next(model.parameters()).device
    texts, total = [], 0
    for p in batch:
        ids = torch.tensor([renderer.encode_prompt(p)], device=device)
        with torch.inference_mode():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                 do_sample=False, eos_token_id=stops, pad_token_id=tok.pad_token_id)
        new = out[0, ids.shape[1]:].tolist()
        end = next((k for k, t in enumerate(new) if t in stops), None)
        total += len(new) if end is None else end + 1
        texts.append(tok.decode(new if end is None else new[:end], skip_special_tokens=True))
    return texts, total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompts", type=int, default=48)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "eval_bench.json")
    args = ap.parse_args()

    tok = load_tokenizer("smollm2-135m-instruct")
    renderer = ChatRenderer(tok, load_template("model", tok))
    model = load_model("smollm2-135m-instruct").to(args.device).eval()
    batch = prompts(args.prompts)
    generate(model, renderer, batch[:2], max_new_tokens=4)  # warm-up (kernels, allocator)
    one_at_a_time(model, renderer, batch[:1], 4)

    t0 = time.perf_counter()
    single_texts, single_tokens = one_at_a_time(model, renderer, batch, args.max_new_tokens)
    single_s = time.perf_counter() - t0
    outputs, stats = generate(model, renderer, batch, max_new_tokens=args.max_new_tokens,
                              batch_size=args.batch_size)
    single_tps = single_tokens / single_s
    result = {
        "model": "smollm2-135m-instruct", "device": args.device,
        "device_name": torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or "cpu",
        "torch_threads": torch.get_num_threads(), "prompts": len(batch), "max_new_tokens": args.max_new_tokens,
        "batch_size": args.batch_size,
        "one_at_a_time": {"new_tokens": single_tokens, "seconds": round(single_s, 2),
                          "tokens_per_s": round(single_tps, 1)},
        "eval_stage_batched": stats.to_dict(),
        "speedup": round(stats.tokens_per_s / single_tps, 2),
        "identical_replies": sum(a == b.text for a, b in zip(single_texts, outputs)),
        "target": ">= 3x",
    }
    print(f"one prompt at a time: {single_tps:.1f} tok/s; eval stage (batch {args.batch_size}): "
          f"{stats.tokens_per_s:.1f} tok/s; speedup {result['speedup']}x (target >= 3x); identical replies "
          f"{result['identical_replies']}/{len(batch)}")
    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    previous[args.device] = result
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(previous, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
