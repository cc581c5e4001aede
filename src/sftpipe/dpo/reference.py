"""The reference of a DPO run: an SFT run (or one of its checkpoints), checked, hashed and loaded as the policy.

Reference semantics (never the base model):
- LoRA SFT run: the policy *continues the SFT adapter* on the same base. At step 0 policy and reference are the
  same function (base + SFT adapter), so the loss starts at exactly ln 2, the DPO run is again an adapter on the
  true base (run.json `base_model`, `sftpipe eval`, `merge` and serving work unchanged), and no merged copy of the
  weights is written. The reference is a frozen copy of that adapter (TRL's "ref" adapter), or, with precomputed
  reference log-probs (the default), log-probs computed once with the SFT adapter before any update.
  (A fresh adapter on merged SFT weights would need those merged weights saved as a new "base" for every run.)
- Full SFT run: the policy and the reference are both the saved SFT weights, loaded from the run folder.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError, ModelError, TemplateError
from ..models import resolve_model
from ..runs import (RunInfo, check_template, is_complete, load_base, load_tokenizer, require_complete, resolve,
                    weights_folder)


@dataclass
class Reference:
    """An SFT run used as DPO reference: where its weights are, its run.json and their sha256."""

    run_dir: Path
    checkpoint: str | None
    folder: Path
    info: RunInfo
    sha256: str

    @property
    def adapter(self) -> bool:
        return (self.folder / "adapter_config.json").is_file()

    def record(self) -> dict[str, Any]:
        """run.json `reference` of the DPO run."""
        return {"run": str(self.run_dir.resolve()), "name": self.info.name, "checkpoint": self.checkpoint,
                "sha256": self.sha256, "mode": self.info.mode,
                "template_sha256": self.info.template.sha256 if self.info.template else None}


def weights_sha256(folder: Path) -> str:
    """sha256 over the folder's safetensors files (name + bytes, sorted by name): the identity of the weights."""
    files = sorted(p for p in folder.glob("*.safetensors") if p.is_file())
    if not files:
        raise ModelError(f"{folder} holds no .safetensors weights; fix: point dpo.reference at a complete SFT run")
    h = hashlib.sha256()
    for p in files:
        h.update(p.name.encode() + b"\0")
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def resolve_reference(ref: str | None) -> Reference:
    """The SFT run (or checkpoint) that `dpo.reference` names, complete and of kind sft; ConfigError otherwise."""
    if not ref:
        raise ConfigError("dpo", ["reference: missing; fix: set dpo.reference to the SFT run folder (runs/<name>) "
                                  "or one of its checkpoints (runs/<name>/checkpoints/checkpoint-<step>)"])
    try:
        run = resolve(ref)
    except ModelError:
        raise ConfigError("dpo", [f"reference: {ref!r} is neither an SFT run folder nor one of its checkpoint "
                                  "folders (no run.json); fix: train it first (`sftpipe train`) and point "
                                  "dpo.reference at runs/<name>"]) from None
    run_dir, checkpoint = run.run_dir, run.checkpoint
    info = require_complete(run_dir)
    if info.kind != "sft":
        sft = (info.reference or {}).get("run", "the SFT run folder")
        raise ConfigError("dpo", [f"reference: {run_dir} is a {info.kind} run, not an SFT run; fix: set "
                                  f"dpo.reference to {sft}"])
    folder = weights_folder(run_dir, checkpoint)
    if checkpoint is not None and not is_complete(folder, verify=True):
        raise ConfigError("dpo", [f"reference: {folder} is not a complete checkpoint (no marker, or its files "
                                  "changed); fix: choose a complete checkpoint or the run folder itself"])
    return Reference(run_dir, checkpoint, folder, info, weights_sha256(folder))


def check_compatible(reference: Reference, renderer, model_name: str) -> None:
    """Refuse a reference trained with another template or base model than the DPO render, naming both. The
    reference's template is the one its saved tokenizer serves, checked against its run.json and parity.json."""
    problems = []
    try:
        sha = check_template(reference.run_dir, load_tokenizer(reference.run_dir), reference.info)
    except TemplateError as e:
        problems.append(f"template: {e}")
    else:
        if sha != renderer.template.sha256:
            problems.append(f"template: the reference {reference.run_dir} was trained with template "
                            f"{reference.info.template.name!r} (sha256 {sha}), but this DPO render uses "
                            f"{renderer.template.name!r} (sha256 {renderer.template.sha256}); fix: set template to "
                            "the SFT run's template (its config `template`), so the preference pass trains what SFT "
                            "trained")
    if resolve_model(model_name) != resolve_model(reference.info.base_model):
        problems.append(f"model: the reference was trained on {reference.info.base_model!r}, this config names "
                        f"{model_name!r}; fix: set model to {reference.info.base_model!r}")
    if problems:
        raise ConfigError("dpo.reference", problems)


def load_policy(reference: Reference, tokenizer_size: int, *, dtype=torch.float32):
    """The model to train: the SFT adapter (trainable) on its base, or the SFT full weights."""
    from transformers import AutoModelForCausalLM

    if reference.adapter:
        from peft import PeftModel

        base = load_base(reference.info, tokenizer_size, dtype=dtype)
        model = PeftModel.from_pretrained(base, reference.folder, is_trainable=True)
    else:
        model = AutoModelForCausalLM.from_pretrained(reference.folder, dtype=dtype, use_safetensors=True)
    model.config.use_cache = False
    return model


def load_reference_model(reference: Reference, tokenizer_size: int, *, dtype=torch.float32):
    """A frozen copy of the full SFT weights (only needed for full runs without precomputed log-probs)."""
    model = load_policy(reference, tokenizer_size, dtype=dtype).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@torch.no_grad()
def completion_logps(model, rows: list[dict[str, list[int]]], side: str, batch_size: int = 8) -> torch.Tensor:
    """Summed log-probability of each row's `<side>_ids` given its `prompt_ids` (fp32, in row order): what DPO
    compares. Plain forward passes with full logits (a test oracle; training uses TRL's fused head)."""
    out = torch.zeros(len(rows), dtype=torch.float64)
    was = model.training
    model.eval()
    for s in range(0, len(rows), batch_size):
        chunk = rows[s:s + batch_size]
        seqs = [r["prompt_ids"] + r[f"{side}_ids"] for r in chunk]
        width = max(map(len, seqs))
        ids = torch.zeros(len(seqs), width, dtype=torch.long)
        att = torch.zeros_like(ids)
        for i, seq in enumerate(seqs):
            ids[i, :len(seq)] = torch.tensor(seq)
            att[i, :len(seq)] = 1
        logps = torch.log_softmax(model(input_ids=ids, attention_mask=att).logits.float(), dim=-1)
        for i, r in enumerate(chunk):
            p, c = len(r["prompt_ids"]), len(r[f"{side}_ids"])
            targets = torch.tensor(r[f"{side}_ids"])
            out[s + i] = logps[i, p - 1:p - 1 + c].gather(1, targets[:, None]).sum().double()
    model.train(was)
    return out
