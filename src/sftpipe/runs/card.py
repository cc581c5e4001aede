"""The model card (`README.md` in HF format): YAML front matter + markdown, written from a run's run.json.

Front matter: `base_model`, `library_name`, `pipeline_tag`, `tags`, and an `sftpipe` block with the mode, template
(name + sha256), data hashes, hyperparameters, final metrics and, once `update_eval` adds them, eval scores. The
body repeats these for people and stores the exact chat template the model was trained with.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from ..io import atomic_write_text
from ..models import hub_id
from .info import RunInfo, read_info, write_info

EVAL_START, EVAL_END = "<!-- sftpipe:eval -->", "<!-- /sftpipe:eval -->"


def hyperparameters(info: dict[str, Any]) -> dict[str, Any]:
    """The training knobs that shape the result, from run.json (mode-specific: LoRA shape only for adapters)."""
    if info.get("kind") == "dpo":
        return dpo_hyperparameters(info)
    t, lora = info["config"]["train"], info["config"]["lora"]
    hp = {"mode": info["mode"], "learning_rate": info["learning_rate"], "scheduler": t["scheduler"],
          "warmup_ratio": t["warmup_ratio"], "epochs": t["epochs"], "max_steps": t["max_steps"],
          "batch_size": t["batch_size"], "grad_accum": t["grad_accum"], "world_size": info["world_size"],
          "effective_batch_sequences": info["effective_batch"]["sequences"],
          "effective_batch_tokens": info["effective_batch"]["tokens"], "weight_decay": t["weight_decay"],
          "max_grad_norm": t["max_grad_norm"], "seed": t["seed"], "precision": info["precision"],
          "batching": info["batching"], "gradient_checkpointing": t["gradient_checkpointing"],
          "max_length": info["config"]["render"]["max_length"]}
    if info["mode"] != "full":
        hp.update(lora_r=lora["r"], lora_alpha=lora["alpha"] or 2 * lora["r"], lora_dropout=lora["dropout"],
                  lora_target_modules=lora["target_modules"])
    return hp


def loss_name(dpo: dict[str, Any]) -> str:
    """The DPO loss as configured: `sigmoid`, or `sigmoid + 1 x sft` with an sft term.

    >>> loss_name({"loss": "sigmoid", "sft_weight": 1.0}), loss_name({"loss": "ipo"})
    ('sigmoid + 1 x sft', 'ipo')
    """
    weight = dpo.get("sft_weight") or 0
    return f"{dpo['loss']} + {weight:g} x sft" if weight else dpo["loss"]


def dpo_hyperparameters(info: dict[str, Any]) -> dict[str, Any]:
    """A DPO run's knobs (its `dpo` section), with the reference it started from."""
    d = info["config"]["dpo"]
    keys = ("beta", "loss", "sft_weight", "scheduler", "warmup_ratio", "epochs", "max_steps", "batch_size",
            "grad_accum", "max_length", "max_prompt_length", "precompute_ref_log_probs", "seed")
    return {"mode": info["mode"], "learning_rate": info["learning_rate"], **{k: d.get(k) for k in keys},
            "precision": info["precision"], "world_size": info["world_size"]}


def _front_matter(info: dict[str, Any], eval_scores: dict[str, Any] | None) -> dict[str, Any]:
    block = {"base_model": {"ref": info["base_model"], "path": info.get("base_model_path")}, "mode": info["mode"],
             "template": {k: v for k, v in info["template"].items() if k != "source"},
             "data": {k: info["data"].get(k) for k in ("train_hash", "eval_hash")},
             "hyperparameters": hyperparameters(info), "results": info.get("results", {}),
             "best_checkpoint": info.get("best_checkpoint")}
    if info.get("reference"):
        block["reference"] = info["reference"]
    if eval_scores is not None:
        block["eval"] = eval_scores
    hub = hub_id(info["base_model"])  # the card's base_model is a hub id or nothing (never a local path)
    return {**({"base_model": hub} if hub else {}),
            "library_name": "peft" if info["mode"] != "full" else "transformers",
            "pipeline_tag": "text-generation", "tags": ["sftpipe", info.get("kind", "sft"), info["mode"]],
            "sftpipe": block}


def _table(rows: dict[str, Any]) -> str:
    lines = ["| key | value |", "|---|---|"]
    lines += [f"| {k} | {json.dumps(v) if not isinstance(v, str) else v} |" for k, v in rows.items()]
    return "\n".join(lines)


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    """Scalar leaves of a nested dict as dotted keys.

    >>> _flat({"a": {"b": 1, "c": [1, 2]}, "d": "x"})
    {'a.b': 1, 'd': 'x'}
    """
    out: dict[str, Any] = {}
    for k, v in (d.items() if isinstance(d, dict) else []):
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        elif isinstance(v, (str, int, float, bool)) or v is None:
            out[key] = v
    return out


def eval_markdown(scores: dict[str, Any]) -> str:
    """The card's evaluation section: every scalar score, dotted by where it sits."""
    return f"{EVAL_START}\n## Evaluation\n\n{_table(_flat(scores))}\n{EVAL_END}\n"


def _summary(info: dict[str, Any]) -> str:
    """The card's first sentence: what kind of run this is and what it started from."""
    if info.get("kind") != "dpo":
        return f"Supervised fine-tune ({info['mode']}) of `{info['base_model']}` made with sftpipe."
    ref, d = info.get("reference") or {}, info["config"]["dpo"]
    return (f"DPO preference pass ({info['mode']}) of `{info['base_model']}` made with sftpipe, from the SFT run "
            f"`{ref.get('name')}` ({ref.get('checkpoint') or 'final weights'}, sha256 `{ref.get('sha256')}`) as its "
            f"reference: beta {d['beta']}, loss {loss_name(d)}, {info['data']['train'].get('pairs')} preference pairs "
            f"(data hash `{info['data']['train_hash']}`).")


def render_card(info: dict[str, Any], eval_scores: dict[str, Any] | None = None) -> str:
    """The whole README.md for a run.json dict."""
    head = yaml.safe_dump(_front_matter(info, eval_scores), sort_keys=False, allow_unicode=True)
    results = info.get("results", {})
    usage = ("from peft import AutoPeftModelForCausalLM\nmodel = AutoPeftModelForCausalLM.from_pretrained(RUN_DIR)"
             if info["mode"] != "full" else
             "from transformers import AutoModelForCausalLM\nmodel = AutoModelForCausalLM.from_pretrained(RUN_DIR)")
    body = [
        f"# {info['config']['name']}", "",
        _summary(info), "",
        "## Training", "", _table(hyperparameters(info)), "",
        "## Data", "",
        f"Train hash `{info['data']['train_hash']}`, "
        + (f"eval hash `{info['data']['eval_hash']}`" if info["data"].get("eval_hash") else "no held-out split")
        + f" ({info['data']['hash_definition']}).", "",
        _table({k: info["mask_report"].get(k) for k in ("examples", "tokens", "trained_tokens", "trained_share",
                                                        "eot_coverage", "truncated")}), "",
        "## Results", "", _table(results) if results else "Training has not finished.", "",
        eval_markdown(eval_scores) if eval_scores is not None else
        f"{EVAL_START}\n## Evaluation\n\nNot evaluated yet (`sftpipe eval`).\n{EVAL_END}\n",
        "## Chat template", "",
        f"Template `{info['template']['name']}`, sha256 `{info['template']['sha256']}`; the same text is in "
        "`tokenizer_config.json`, so `tokenizer.apply_chat_template` renders exactly what training saw.", "",
        "```jinja", info["template"]["source"].rstrip("\n"), "```", "",
        "## Usage", "", "```python", "from transformers import AutoTokenizer", usage,
        "tokenizer = AutoTokenizer.from_pretrained(RUN_DIR)", "```", ""]
    return f"---\n{head}---\n\n" + "\n".join(body)


def read_card(path: Path) -> tuple[dict[str, Any], str]:
    """(front matter, body) of a model card."""
    text = Path(path).read_text(encoding="utf-8")
    if not text.startswith("---\n") or "\n---\n" not in text[4:]:
        return {}, text
    head, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(head) or {}, body


def write_card(run_dir: Path, info: RunInfo) -> Path:
    """Write `run_dir/README.md` from run.json contents (keeps eval scores already in run.json)."""
    path = Path(run_dir) / "README.md"
    atomic_write_text(path, render_card(info.to_json(), info.eval))
    return path


def update_eval(run_dir: str | Path, scores: dict[str, Any]) -> Path:
    """Add eval scores to a run: run.json `eval`, the card's front matter (`sftpipe.eval`) and its Evaluation
    section. Called by the eval stage; idempotent."""
    info = read_info(run_dir)
    info.eval = scores
    write_info(run_dir, info)
    return write_card(Path(run_dir), info)
