"""Packed batches on a GPU: loss equals the unpacked loss and no example attends to another (SDPA, eager, flash
if installed), in float32 and bf16, through sftpipe's pack() + PackedCollator on a random-init Llama.

    python bench/gpu_packing_check.py [--out bench/results/gpu_packing.json]
"""

from __future__ import annotations

import argparse
import json
import random

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from sftpipe.collate import PackedCollator
from sftpipe.pack import pack


def examples(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        length = rng.randint(20, 300)
        ids = [rng.randint(3, 999) for _ in range(length)]
        prompt = rng.randint(1, length - 2)
        out.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]})
    return out


def unpacked_loss(model, exs, device) -> float:
    total, count = 0.0, 0
    for ex in exs:
        ids = torch.tensor([ex["input_ids"]], device=device)
        labels = torch.tensor([[-100] + ex["labels"][1:]], device=device)
        logits = model(input_ids=ids, use_cache=False).logits.float()
        loss = torch.nn.functional.cross_entropy(logits[0, :-1], labels[0, 1:], ignore_index=-100, reduction="sum")
        total += loss.item()
        count += int((labels[0, 1:] != -100).sum())
    return total / count


def check(attn: str, dtype: torch.dtype, device: str) -> dict:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=1000, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048)
    model = LlamaForCausalLM(cfg).to(device=device, dtype=dtype).eval()
    model.config._attn_implementation = attn
    exs = examples(24)
    packs, report = pack(exs, 1024)
    batch = PackedCollator()(packs)
    batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
    with torch.no_grad():
        packed = model(**batch).loss.item()
        plain = unpacked_loss(model, exs, device)
        # cross-attention probe: change the first example of the first pack, the rest of that pack must not move
        first = packs[0]["seq_lens"][0]
        changed = dict(batch)
        changed["input_ids"] = batch["input_ids"].clone()
        changed["input_ids"][0, :first] = (changed["input_ids"][0, :first] + 1) % 1000
        a = model(**{k: v for k, v in batch.items() if k != "labels"}).logits[0, first:sum(packs[0]["seq_lens"])]
        b = model(**{k: v for k, v in changed.items() if k != "labels"}).logits[0, first:sum(packs[0]["seq_lens"])]
    return {"attn": attn, "dtype": str(dtype).replace("torch.", ""), "packed_loss": packed, "unpacked_loss": plain,
            "abs_diff": abs(packed - plain), "max_logit_change_in_other_examples": (a - b).abs().max().item(),
            "packing_efficiency": report.efficiency}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench/results/gpu_packing.json")
    out = ap.parse_args().out
    device = "cuda" if torch.cuda.is_available() else "cpu"
    impls = ["sdpa", "eager"]
    try:
        import flash_attn  # noqa: F401
        impls.append("flash_attention_2")
    except ImportError:
        pass
    rows = [check(a, d, device) for a in impls for d in (torch.float32, torch.bfloat16)]
    result = {"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu", "torch": torch.__version__,
              "flash_attn_installed": "flash_attention_2" in impls, "checks": rows}
    print(json.dumps(result, indent=2))
    with open(out, "w") as f:
        f.write(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
