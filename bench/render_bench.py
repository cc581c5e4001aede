"""Render + tokenize + mask + pack throughput: sftpipe against TRL's SFTTrainer dataset preparation.

Same 2,000 multi-turn Harbor support conversations, same SmolLM2 tokenizer, max_length 2048, same process.
TRL needs a chat template with {% generation %} tags for assistant-only loss (SmolLM2's stock template has none),
so TRL runs on a patched copy; sftpipe runs on the stock template. Prints conversations/s, tokens/s, the ratio,
packing efficiency, and whether both sides train exactly the same tokens.

    .venv/bin/python bench/render_bench.py [--n 2000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

from sftpipe.conversation import Conversation, Message
from sftpipe.dataset import build_examples
from sftpipe.demo.generate import generate
from sftpipe.models import load_tokenizer, tiny_model
from sftpipe.pack import pack
from sftpipe.render import ChatRenderer
from sftpipe.templates import load_template

PATCHED = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}"
    "{% if message['role'] == 'assistant' %}{{ '<|im_start|>assistant\n' }}{% generation %}"
    "{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\n' }}"
    "{% else %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def conversations(n: int, seed: int = 0) -> list[list[dict]]:
    """n multi-turn conversations (2-4 exchanges) stitched from generated Harbor threads."""
    with tempfile.TemporaryDirectory() as d:
        res = generate(Path(d), size="default", seed=seed)
        threads = [json.loads(x) for x in res.files["export"].read_text().splitlines()]
    threads = [t for t in threads if all(m["content"].strip() for m in t["messages"])]
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        picks = rng.sample(threads, rng.randint(2, 4))
        msgs = [picks[0]["messages"][0]] if picks[0]["messages"][0]["role"] == "system" else []
        for t in picks:
            msgs += [m for m in t["messages"] if m["role"] != "system"]
        out.append(msgs)
    return out


def run_sftpipe(convs, max_length):
    tok = load_tokenizer("smollm2-135m-instruct")
    renderer = ChatRenderer(tok, load_template("model", tok))
    # like TRL's Dataset.from_list, building the in-memory conversations is outside the timed region
    conversations = [Conversation([Message(m["role"], m["content"]) for m in msgs]) for msgs in convs]
    t0 = time.perf_counter()
    examples, _, _ = build_examples(conversations, renderer, max_length=max_length)
    rows = [{"input_ids": e.input_ids, "labels": e.labels} for e in examples]
    packs, report = pack(rows, max_length, overflow="drop")
    elapsed = time.perf_counter() - t0
    return elapsed, examples, report


def run_trl(convs, max_length):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    tok = load_tokenizer("smollm2-135m-instruct")
    tok.chat_template = PATCHED
    with tempfile.TemporaryDirectory() as d:
        args = SFTConfig(output_dir=d, assistant_only_loss=True, packing=True, max_length=max_length, report_to=[],
                         dataset_num_proc=None, per_device_train_batch_size=1, bf16=False, use_cpu=True)
        small = Dataset.from_list([{"messages": convs[0]}])
        trainer = SFTTrainer(model=tiny_model(tok), args=args, train_dataset=small, processing_class=tok)
        ds = Dataset.from_list([{"messages": m} for m in convs])
        t0 = time.perf_counter()
        out = trainer._prepare_dataset(ds, tok, args, packing=True, formatting_func=None, dataset_name="bench")
        elapsed = time.perf_counter() - t0
        unpacked = trainer._prepare_dataset(ds.select(range(200)), tok, args, packing=False, formatting_func=None,
                                            dataset_name="masks")
    return elapsed, out, unpacked


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--max-length", type=int, default=2048)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default="bench/results/render_bench.json")
    a = ap.parse_args()
    convs = conversations(a.n)
    load_before = os.getloadavg()[0]
    ours, theirs = [], []
    for _ in range(a.repeat):  # interleaved, so a change in machine load hits both sides alike
        ours.append(run_sftpipe(convs, a.max_length))
        theirs.append(run_trl(convs, a.max_length))
    t_ours, examples, report = min(ours, key=lambda r: r[0])
    t_trl, trl_packed, trl_unpacked = min(theirs, key=lambda r: r[0])
    tokens = sum(len(e.input_ids) for e in examples)
    trl_tokens = sum(len(x) for x in trl_packed["input_ids"])
    # Mask agreement on the first 200 conversations: TRL's assistant_masks vs our labels, token by token.
    same = sum(list(e.input_ids) == list(t["input_ids"]) and [lab != -100 for lab in e.labels] ==
               [x != -100 for x in t["labels"]] for e, t in zip(examples[:200], trl_unpacked))
    trl_slots = len(trl_packed["input_ids"]) * a.max_length
    result = {
        "baseline": "trl 1.16 SFTTrainer._prepare_dataset (assistant_only_loss, packing=bfd, patched template)",
        "conversations": a.n, "max_length": a.max_length, "tokens": tokens,
        "sftpipe": {"seconds": round(t_ours, 3), "conv_per_s": round(a.n / t_ours, 1),
                    "tokens_per_s": round(tokens / t_ours), "packing_efficiency": round(report.efficiency, 4)},
        "trl": {"seconds": round(t_trl, 3), "conv_per_s": round(a.n / t_trl, 1),
                "tokens_per_s": round(trl_tokens / t_trl), "packing_efficiency": round(trl_tokens / trl_slots, 4)},
        "ratio_throughput": round(t_trl / t_ours, 2),
        "masks_identical_first_200": f"{same}/200",
        "machine": {"cpu_count": os.cpu_count(), "loadavg_1min_before": round(load_before, 2),
                    "tokenizer_threads": os.environ.get("RAYON_NUM_THREADS", "all cores")},
        "all_seconds": {"sftpipe": [round(r[0], 3) for r in ours], "trl": [round(r[0], 3) for r in theirs]},
    }
    print(json.dumps(result, indent=2))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
