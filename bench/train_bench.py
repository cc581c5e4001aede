"""SFT training throughput and peak memory: `sftpipe train` against TRL's SFTTrainer, same run, same everything.

Same conversations (stitched multi-turn Harbor threads, as in render_bench), same model (SmolLM2-135M-Instruct),
same LoRA (r 16, alpha 32, dropout 0.05, all attention + MLP projections), same lr/schedule/seed, one epoch,
assistant-only loss on both sides (TRL through a copy of the template with {% generation %} tags). Every side runs
in its own subprocess with the same environment (allocator settings included) and reports:

- tokens/s: real (non-padding) input tokens trained per second, from the end of step 1 to the end of the epoch
  (step 1 holds one-off warm-up), counted by the Trainer itself (num_input_tokens_seen) on both sides;
- peak RSS: VmHWM from /proc/self/status at the end of the process;
- the loss per step.

Sides: `sftpipe` (defaults: length-grouped padded batches of <= 768 token slots at widths rounded up to 64,
lm_head + loss on trained positions only and in chunks, lean LoRA dropout, bf16 autocast where the CPU has
avx512_bf16/AMX), `trl-default` (TRL defaults: padded batches of 8, gradient checkpointing, bf16),
`trl-packed` (TRL's best on CPU: packing, batch 1, no checkpointing, bf16), and `sftpipe-fp32` (the precision check:
same run in fp32, compared for speed and loss curve).

    .venv/bin/python bench/train_bench.py [--n 48] [--sides sftpipe,trl-default,trl-packed,sftpipe-fp32]
        [--set train.max_tokens=512 ...]   (config overrides for the sftpipe sides, e.g. for a sweep)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
LORA = {"r": 16, "alpha": 32, "dropout": 0.05}
LR, SEED, MAX_LENGTH = 2e-4, 42, 1024


def status_mb(key: str) -> float:
    """A memory figure of this process from /proc/self/status, in MiB: VmHWM (peak resident set size), RssAnon, ..."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _timer():
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        """Wall time and tokens seen at the end of every step (the same callback on both sides)."""

        def __init__(self):
            self.marks: list[tuple[float, int]] = []

        def on_train_begin(self, args, state, control, **kwargs):
            self.start = (time.perf_counter(), state.num_input_tokens_seen, time.process_time())

        def on_step_end(self, args, state, control, **kwargs):
            self.marks.append((time.perf_counter(), state.num_input_tokens_seen, time.process_time()))

    return StepTimer()


def _measure(timer, log_history) -> dict:
    (t1, n1, c1) = timer.marks[0] if len(timer.marks) > 1 else timer.start  # a 1-step run keeps its warm-up
    (t_end, n_end, c_end) = timer.marks[-1]
    losses = [round(m["loss"], 4) for m in log_history if "loss" in m]
    return {"steps": len(timer.marks), "tokens": n_end, "tokens_after_step1": n_end - n1,
            "seconds_after_step1": round(t_end - t1, 2), "tokens_per_s": round((n_end - n1) / (t_end - t1), 1),
            "tokens_per_cpu_s": round((n_end - n1) / (c_end - c1), 1), "losses": losses}


def worker_sftpipe(data: Path, out_dir: Path, batch_size: int, precision: str, overrides: list[str]) -> dict:
    from sftpipe.config import load_config
    from sftpipe.train import sft

    timer = _timer()
    cfg = load_config(overrides=[
        "name=bench", f"data.train={data}", f"render.max_length={MAX_LENGTH}", f"train.output_dir={out_dir}",
        "train.epochs=1", f"train.batch_size={batch_size}", "train.grad_accum=1", f"train.lr={LR}",  # TRL: 1
        "train.warmup_ratio=0.05", f"train.seed={SEED}", "train.save_steps=100000", "train.report_to=none",
        "train.logging_steps=1", f"train.precision={precision}", "train.parity_examples=0",
        f"lora.r={LORA['r']}", f"lora.alpha={LORA['alpha']}", f"lora.dropout={LORA['dropout']}", *overrides])
    original = sft._callbacks
    sft._callbacks = lambda *a, **k: original(*a, **k) + [timer]
    result = sft.run(cfg, progress=False)
    info = json.loads((result.run_dir / "run.json").read_text())
    return {**_measure(timer, info["metrics"]), "precision": result.precision, "batching": result.batching,
            "batch_size": batch_size}


def worker_trl(data: Path, out_dir: Path, packed: bool) -> dict:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    from render_bench import PATCHED
    from sftpipe.models import load_tokenizer, resolve_model

    tok = load_tokenizer("smollm2-135m-instruct")
    tok.chat_template = PATCHED
    rows = [json.loads(x) for x in data.read_text().splitlines()]
    ds = Dataset.from_list([{"messages": r["messages"]} for r in rows])
    model = AutoModelForCausalLM.from_pretrained(resolve_model("smollm2-135m-instruct"))
    extra = ({"packing": True, "per_device_train_batch_size": 1, "gradient_checkpointing": False,
              "include_num_input_tokens_seen": "all"} if packed else
             {"include_num_input_tokens_seen": "non_padding"})  # defaults: batch 8, padding, checkpointing
    args = SFTConfig(output_dir=str(out_dir), assistant_only_loss=True, max_length=MAX_LENGTH, num_train_epochs=1,
                     learning_rate=LR, lr_scheduler_type="cosine", warmup_steps=0.05, seed=SEED, logging_steps=1,
                     save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True, **extra)
    timer = _timer()
    peft_config = LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
                             target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, peft_config=peft_config,
                         callbacks=[timer])
    trainer.train()
    return {**_measure(timer, trainer.state.log_history), "packing": packed,
            "batch_size": args.per_device_train_batch_size, "gradient_checkpointing": args.gradient_checkpointing,
            "bf16": args.bf16}


def worker(side: str, data: Path, out: Path, batch_size: int, overrides: list[str]) -> None:
    sys.path.insert(0, str(HERE))
    with tempfile.TemporaryDirectory() as d:
        if side.startswith("sftpipe"):
            res = worker_sftpipe(data, Path(d), batch_size, "fp32" if side == "sftpipe-fp32" else "auto", overrides)
        else:
            res = worker_trl(data, Path(d), packed=side == "trl-packed")
    res["peak_rss_mb"] = round(status_mb("VmHWM"), 1)
    out.write_text(json.dumps(res))


def make_data(n: int, path: Path) -> int:
    """n stitched conversations as OpenAI-messages JSONL; returns their count."""
    sys.path.insert(0, str(HERE))
    from render_bench import conversations

    convs = conversations(n)
    path.write_text("".join(json.dumps({"messages": c}) + "\n" for c in convs))
    return len(convs)


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=8, help="sftpipe max rows per micro-batch (train.batch_size)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="config override for the sftpipe sides (e.g. train.max_tokens=512); repeatable")
    ap.add_argument("--sides", default="sftpipe,trl-default,trl-packed,sftpipe-fp32")
    ap.add_argument("--out", default=str(HERE / "results" / "train_bench.json"))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        return worker(a.worker, Path(a.data), Path(a.result), a.batch_size, a.set)
    with tempfile.TemporaryDirectory() as d:
        data = Path(d) / "bench.jsonl"
        make_data(a.n, data)
        env = dict(os.environ)  # identical for every side: allocator settings, threads, ...
        sides = {}
        for side in a.sides.split(","):
            out = Path(d) / f"{side}.json"
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, __file__, "--worker", side, "--data", str(data), "--result",
                                   str(out), "--batch-size", str(a.batch_size)]
                                  + [arg for kv in a.set for arg in ("--set", kv)], env=env, capture_output=True,
                                  text=True)
            if proc.returncode != 0:
                raise SystemExit(f"{side} failed:\n{proc.stderr[-4000:]}")
            sides[side] = {**json.loads(out.read_text()), "wall_s": round(time.perf_counter() - t0, 1)}
            print(f"{side}: {sides[side]['tokens_per_s']} tokens/s, peak RSS {sides[side]['peak_rss_mb']} MiB",
                  flush=True)
    result = {"model": "SmolLM2-135M-Instruct", "conversations": a.n, "max_length": MAX_LENGTH, "lora": LORA,
              "sftpipe_overrides": a.set,
              "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                          "allocator_env": {k: v for k, v in env.items() if k.startswith(("MALLOC", "LD_PRELOAD",
                                                                                         "OMP", "MKL"))}},
              "sides": sides}
    ours = sides.get("sftpipe")
    if ours:
        for base in ("trl-default", "trl-packed"):
            if base in sides:
                result[f"vs_{base}"] = {"tokens_per_s_ratio": _ratio(ours["tokens_per_s"], sides[base]["tokens_per_s"]),
                                        "tokens_per_cpu_s_ratio": _ratio(ours["tokens_per_cpu_s"],
                                                                         sides[base]["tokens_per_cpu_s"]),
                                        "peak_rss_ratio": _ratio(ours["peak_rss_mb"], sides[base]["peak_rss_mb"])}
        if "sftpipe-fp32" in sides:
            fp32 = sides["sftpipe-fp32"]
            diffs = [abs(x - y) for x, y in zip(ours["losses"], fp32["losses"])]
            result["precision_check"] = {
                "bf16_vs_fp32_tokens_per_s_ratio": _ratio(ours["tokens_per_s"], fp32["tokens_per_s"]),
                "max_abs_loss_diff": round(max(diffs), 4), "mean_abs_loss_diff": round(sum(diffs) / len(diffs), 4),
                "final_loss": {"bf16": ours["losses"][-1], "fp32": fp32["losses"][-1]}}
    print(json.dumps({k: v for k, v in result.items() if k != "sides"}, indent=2))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
