"""GPU training throughput: a ~1B Llama (random init, bf16 frozen base, LoRA r16 on all projections) trained with
sftpipe's Trainer (trained-positions loss) against transformers' plain Trainer (the model's own full-logits loss),
each with padded and with packed (padding-free) batches, on the same synthetic token data.

TRL is not installed on the lent GPU machine (and it has no network), so the baselines are the HF Trainer setups
TRL's SFTTrainer wraps: `hf-padded` (TRL's default padding) and `hf-packed` (TRL's padding-free packing). The
script needs only torch, transformers, peft and sftpipe's source (no config stack): `PYTHONPATH=src`.
Each side runs in its own process; reports tokens/s (real tokens, after 3 warm-up steps), MFU and peak memory.

    PYTHONPATH=src python bench/train_gpu_bench.py --out bench/results/train_gpu_bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

H100_BF16_DENSE_TFLOPS = 989.0
SIDES = ("sftpipe-packed", "sftpipe-padded", "hf-packed", "hf-padded")


def llama_1b(vocab: int, tiny: bool):
    from transformers import LlamaConfig

    if tiny:
        return LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096)
    return LlamaConfig(vocab_size=vocab, hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
                       num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=4096,
                       tie_word_embeddings=True)


def examples(n: int, vocab: int, seed: int = 0) -> list[dict]:
    """Chat-like rows: 128-1024 tokens, the last ~40% trained (an assistant reply), first label -100."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        length = rng.randint(128, 1024)
        ids = [rng.randrange(100, vocab) for _ in range(length)]
        start = int(length * 0.6)
        rows.append({"input_ids": ids, "labels": [-100] * start + ids[start:]})
    return rows


def worker(side: str, steps: int, tiny: bool) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM, Trainer, TrainerCallback, TrainingArguments

    from sftpipe.collate import PackedCollator, PaddedCollator
    from sftpipe.pack import group_by_length, pack
    from sftpipe.train.trainer import SftTrainer, trained_index, training_arguments  # torch + transformers only

    def with_index(batch):  # what sftpipe.train.data.ItemCollator adds
        return {**batch, "trained_index": trained_index(batch["labels"])}

    class ItemDataset(torch.utils.data.Dataset):  # as sftpipe.train.data (which also needs the config stack)
        def __init__(self, items):
            self.items = items

        def __len__(self):
            return len(self.items)

        def __getitem__(self, i):
            return self.items[i]

    device = "cuda" if torch.cuda.is_available() else "cpu"
    vocab, max_length, batch = 49152, 1024, 8
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(llama_1b(vocab, tiny)).to(torch.bfloat16)
    n_params = sum(p.numel() for p in model.parameters())
    model.config.use_cache = False
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear",
                                             task_type="CAUSAL_LM"))
    rows = examples(batch * (steps + 4) * 2, vocab)
    packed = side.endswith("packed")
    if packed:  # one item = `batch` packs of <= max_length tokens -> one padding-free row
        packs, _ = pack(rows, max_length)
        items = [{"rows": packs[s:s + batch]} for s in range(0, len(packs), batch)]
    else:
        groups, _ = group_by_length(rows, batch_size=batch, max_length=max_length)
        items = [{"rows": [rows[i] for i in g]} for g in groups]
    items = items[: steps + 3]

    class Timer(TrainerCallback):
        marks: list = []

        def on_step_end(self, args, state, control, **kwargs):
            torch.cuda.synchronize() if device == "cuda" else None
            self.marks.append((time.perf_counter(), state.num_input_tokens_seen))

    timer = Timer()
    collate = PackedCollator() if packed else PaddedCollator(0)
    common = dict(max_steps=len(items), save_strategy="no", report_to=[], logging_steps=1, disable_tqdm=True,
                  bf16=device == "cuda", use_cpu=device == "cpu", learning_rate=2e-4, seed=0,
                  per_device_train_batch_size=1, remove_unused_columns=False, dataloader_num_workers=2,
                  include_num_input_tokens_seen="all" if packed else "non_padding",
                  train_sampling_strategy="sequential", output_dir="/tmp/gpu-bench")
    if side.startswith("sftpipe"):
        tcfg = SimpleNamespace(scheduler="cosine", warmup_ratio=0.05, epochs=1, max_steps=len(items), grad_accum=1,
                               weight_decay=0.0, max_grad_norm=1.0, seed=0, gradient_checkpointing=False,
                               eval_steps=50, save_steps=None, save_total_limit=None, logging_steps=1,
                               dataloader_workers=2, fsdp="", fsdp_config={})
        args = training_arguments(tcfg, output_dir="/tmp/gpu-bench", lr=2e-4, precision="bf16" if device == "cuda"
                                  else "fp32", device=device, batching="packed" if packed else "padded",
                                  has_eval=False, report_to=[], save_strategy="no",
                                  train_sampling_strategy="sequential")
        trainer = SftTrainer(model=model, args=args, train_dataset=ItemDataset(items),
                             data_collator=lambda feats: with_index(collate(feats[0]["rows"])), callbacks=[timer])
    else:  # plain Trainer: the model computes logits for every position and its own loss
        trainer = Trainer(model=model, args=TrainingArguments(**common), train_dataset=ItemDataset(items),
                          data_collator=lambda feats: collate(feats[0]["rows"]), callbacks=[timer])
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    (t0, n0), (t1, n1) = timer.marks[2], timer.marks[-1]
    tps = (n1 - n0) / (t1 - t0)
    cfg = model.config
    attn = 2 * 2 * cfg.num_hidden_layers * cfg.hidden_size * 600  # causal attention, ~600-token mean context
    lora_flops = 4 * n_params + attn * 2  # forward 2N + input-grad 2N (frozen base) + attention fwd/bwd
    losses = [m["loss"] for m in trainer.state.log_history if "loss" in m]
    return {"side": side, "params": n_params, "steps": len(timer.marks), "tokens_per_s": round(tps, 1),
            "mfu_lora_flops": round(tps * lora_flops / (H100_BF16_DENSE_TFLOPS * 1e12), 4),
            "mfu_6n": round(tps * 6 * n_params / (H100_BF16_DENSE_TFLOPS * 1e12), 4),
            "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device == "cuda" else None,
            "first_loss": losses[0], "last_loss": losses[-1],
            "gpu": torch.cuda.get_device_name() if device == "cuda" else "cpu"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--tiny", action="store_true", help="a 2-layer model (a CPU smoke test)")
    ap.add_argument("--sides", default=",".join(SIDES))
    ap.add_argument("--out", default="bench/results/train_gpu_bench.json")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        print("RESULT " + json.dumps(worker(a.worker, a.steps, a.tiny)), flush=True)
        return
    results = {}
    for side in a.sides.split(","):
        cmd = [sys.executable, __file__, "--worker", side, "--steps", str(a.steps)] + (["--tiny"] if a.tiny else [])
        proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
        line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        results[side] = json.loads(line[-1][7:]) if line else {"error": proc.stderr[-3000:]}
        print(side, json.dumps(results[side])[:400], flush=True)
    ok = {k: v for k, v in results.items() if "tokens_per_s" in v}
    ratios = {}
    for ours, base in (("sftpipe-packed", "hf-packed"), ("sftpipe-padded", "hf-padded"),
                       ("sftpipe-packed", "hf-padded")):
        if ours in ok and base in ok:
            ratios[f"{ours}_vs_{base}"] = {
                "tokens_per_s": round(ok[ours]["tokens_per_s"] / ok[base]["tokens_per_s"], 3),
                "peak_memory": round(ok[ours]["peak_memory_gib"] / ok[base]["peak_memory_gib"], 3)
                if ok[ours]["peak_memory_gib"] else None}
    out = {"model": "Llama ~1B random init, bf16 weights, LoRA r16 alpha32 all-linear", "baseline_note":
           "TRL is not installed on the GPU machine; hf-* are the HF Trainer setups TRL's SFTTrainer uses",
           "results": results, "ratios": ratios}
    print(json.dumps(ratios, indent=2))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
