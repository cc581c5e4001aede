"""DPO throughput and peak memory: sftpipe's preference trainer against TRL's stock DPOTrainer, same pairs.

Same preference pairs (the Harbor demo's: chosen = the short compliant reply, rejected = boilerplate opener,
hedging variant or policy slip), same model (SmolLM2-135M-Instruct, the embedded default), same LoRA (r 16,
alpha 32, all attention + MLP projections, a fresh adapter on both sides), same beta / lr / schedule / seed, batch
and accumulation, fp32 on both sides (this CPU has no avx512_bf16), gradient checkpointing off on both sides. Each
side runs in its own subprocess with the same environment and reports:

- pairs/s: pairs trained per second of `trainer init + train()` (so sftpipe's reference precompute is paid for;
  its cache is empty), model loading excluded;
- peak RSS: VmHWM from /proc/self/status at the end of the process;
- the loss per step.

Sides: `sftpipe` (pairs tokenized by sftpipe's renderer, one row per pair with the prompt computed once and each
reply masked from the other, reference log-probs precomputed once, length-grouped micro-batches) and `trl` (TRL
1.16 stock: it tokenizes the conversational records itself, two rows per pair, computes the reference with the
adapter disabled at every step, random batches).

    .venv/bin/python bench/dpo_bench.py [--n 32] [--steps 8]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
LORA = {"r": 16, "alpha": 32, "dropout": 0.05}
BETA, LR, SEED, BATCH, ACCUM = 0.1, 5e-5, 42, 2, 2


def status_mb(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _records(data: Path) -> list[dict]:
    return [json.loads(line) for line in data.read_text().splitlines()]


def _model():
    from transformers import AutoModelForCausalLM

    from sftpipe.models import resolve_model

    model = AutoModelForCausalLM.from_pretrained(resolve_model("smollm2-135m-instruct"), dtype="float32")
    model.config.use_cache = False
    return model


def _lora():
    from peft import LoraConfig

    return LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"], target_modules="all-linear",
                      task_type="CAUSAL_LM")


def _args(out_dir: Path, steps: int, **extra):
    from trl import DPOConfig

    return DPOConfig(output_dir=str(out_dir), use_cpu=True, bf16=False, fp16=False, report_to=[], beta=BETA,
                     learning_rate=LR, max_steps=steps, per_device_train_batch_size=BATCH,
                     gradient_accumulation_steps=ACCUM, seed=SEED, logging_steps=1, save_strategy="no",
                     activation_checkpointing=False, disable_tqdm=True, max_length=None, **extra)


def worker_sftpipe(data: Path, out_dir: Path, steps: int) -> dict:
    from datasets import Dataset
    from peft import get_peft_model

    from sftpipe.dataset import build_renderer
    from sftpipe.config import load_config
    from sftpipe.dpo.encode import encode_pairs
    from sftpipe.dpo.pairs import iter_pairs
    from sftpipe.dpo.trainer import PreferenceTrainer, row_length

    cfg = load_config()
    renderer = build_renderer(cfg.model, cfg.template, cfg.render)
    model = get_peft_model(_model(), _lora())
    t0 = time.perf_counter()
    rows = encode_pairs(iter_pairs(data), renderer, max_length=1024, max_prompt_length=768).rows
    dataset = Dataset.from_list([{**r, "length": row_length(r)} for r in rows])
    trainer = PreferenceTrainer(model=model, args=_args(out_dir, steps, precompute_ref_log_probs=True,
                                                        precompute_ref_batch_size=2 * BATCH,
                                                        remove_unused_columns=False),
                                train_dataset=dataset, processing_class=renderer.tokenizer,
                                ref_cache={"train": out_dir / "ref.safetensors"})
    trainer.train()
    return {"seconds": time.perf_counter() - t0, "log": trainer.state.log_history}


def worker_trl(data: Path, out_dir: Path, steps: int) -> dict:
    from datasets import Dataset
    from trl import DPOTrainer

    from sftpipe.models import load_tokenizer

    tok = load_tokenizer("smollm2-135m-instruct")
    records = [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in _records(data)]
    model = _model()
    t0 = time.perf_counter()
    trainer = DPOTrainer(model=model, args=_args(out_dir, steps), train_dataset=Dataset.from_list(records),
                         processing_class=tok, peft_config=_lora())
    trainer.train()
    return {"seconds": time.perf_counter() - t0, "log": trainer.state.log_history}


def worker(side: str, data: Path, out: Path, steps: int) -> None:
    import torch

    torch.manual_seed(SEED)
    with tempfile.TemporaryDirectory() as d:
        res = (worker_sftpipe if side == "sftpipe" else worker_trl)(data, Path(d), steps)
    losses = [m["loss"] for m in res["log"] if "loss" in m]
    pairs = steps * BATCH * ACCUM
    out.write_text(json.dumps({"pairs_per_s": round(pairs / res["seconds"], 3), "seconds": round(res["seconds"], 1),
                               "pairs": pairs, "peak_rss_mb": round(status_mb("VmHWM"), 1), "losses": losses,
                               "final_margin": next((m["rewards/margins"] for m in reversed(res["log"])
                                                     if "rewards/margins" in m), None)}))


def make_data(n: int, path: Path) -> None:
    from sftpipe.demo.generate import make_thread
    from sftpipe.demo.pairs import make_pairs

    rows = make_pairs(random.Random(0), n, make_thread)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=32, help="preference pairs (one epoch is n / (2 x 2) steps)")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--sides", default="sftpipe,trl")
    ap.add_argument("--out", default=str(HERE / "results" / "dpo_bench.json"))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        return worker(a.worker, Path(a.data), Path(a.result), a.steps)
    with tempfile.TemporaryDirectory() as d:
        data = Path(d) / "pairs.jsonl"
        make_data(a.n, data)
        env = dict(os.environ)
        sides = {}
        for side in a.sides.split(","):
            out = Path(d) / f"{side}.json"
            proc = subprocess.run([sys.executable, __file__, "--worker", side, "--data", str(data), "--result",
                                   str(out), "--steps", str(a.steps)], env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"{side} failed:\n{proc.stderr[-4000:]}")
            sides[side] = json.loads(out.read_text())
            print(f"{side}: {sides[side]['pairs_per_s']} pairs/s, peak RSS {sides[side]['peak_rss_mb']} MiB, "
                  f"losses {[round(x, 4) for x in sides[side]['losses']]}", flush=True)
    result = {"model": "SmolLM2-135M-Instruct", "pairs": a.n, "steps": a.steps, "batch": BATCH, "grad_accum": ACCUM,
              "lora": LORA, "beta": BETA, "lr": LR, "precision": "fp32",
              "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                          "load_avg_at_end": os.getloadavg()}, "sides": sides}
    if {"sftpipe", "trl"} <= set(sides):
        result["vs_trl"] = {"pairs_per_s_ratio": _ratio(sides["sftpipe"]["pairs_per_s"], sides["trl"]["pairs_per_s"]),
                            "peak_rss_ratio": _ratio(sides["sftpipe"]["peak_rss_mb"], sides["trl"]["peak_rss_mb"]),
                            "targets": {"pairs_per_s_ratio": ">= 1.5", "peak_rss_ratio": "<= 0.7"}}
    print(json.dumps({k: v for k, v in result.items() if k != "sides"}, indent=2))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
