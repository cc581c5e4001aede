"""What eval needs of a model: (model, tokenizer, renderer) plus a label, from a run, a checkpoint or a model.

The eval code only ever sees `EvalModel`; `from_objects` builds one from objects already in memory (tests,
notebooks). Runs load through `sftpipe.runs` (the owner of the run folder).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..render import ChatRenderer
from ..runs import RunInfo, checkpoint_names, load_run, split_ref
from ..templates import load_template


@dataclass
class EvalModel:
    """A model ready for eval: its tokenizer and the renderer with the template it is served with."""

    label: str  # "final", "checkpoint-200", "base", ...
    model: Any
    tokenizer: Any
    renderer: ChatRenderer
    ref: str = ""  # where it came from (run folder, checkpoint folder, model name)
    info: RunInfo | None = None  # run.json of a run, else None

    def describe(self) -> dict:
        """JSON-ready identity: label, origin and template."""
        return {"label": self.label, "ref": self.ref, "template": {"name": self.renderer.template.name,
                                                                   "sha256": self.renderer.template.sha256}}


def from_objects(label: str, model, tokenizer, renderer: ChatRenderer | None = None, *, ref: str = "",
                 info: RunInfo | None = None, template: str = "model", train_on: str = "all_assistant") -> EvalModel:
    """An EvalModel from objects in memory; without a renderer, one is built from the tokenizer's template."""
    if renderer is None:
        renderer = ChatRenderer(tokenizer, load_template(template, tokenizer), train_on=train_on)
    return EvalModel(label, model, tokenizer, renderer, ref, info)


checkpoints = checkpoint_names  # names of a run's complete checkpoints, by step


def load_run_model(run_dir: Path, checkpoint: str | None = None, *, label: str | None = None) -> EvalModel:
    """A run's final weights (or one checkpoint), served with the template saved in the run's tokenizer."""
    run_dir = Path(run_dir)
    model, tokenizer, info = load_run(run_dir, checkpoint, merge=True)  # same function, faster generation
    ref = str(run_dir / "checkpoints" / checkpoint) if checkpoint else str(run_dir)
    return from_objects(label or checkpoint or "final", model, tokenizer, ref=ref, info=info,
                        train_on=info.section("render").get("train_on", "all_assistant"))


def load_reference(ref: str, *, label: str, template: str = "model") -> EvalModel:
    """A baseline: a run folder, a run's checkpoint folder, or a model reference (embedded name / HF folder).

    A plain model is served with its own chat template, or `template` when it has none.
    """
    from ..models import load_model, load_tokenizer

    found = split_ref(ref)
    if found is not None:
        return load_run_model(found[0], found[1], label=label)
    tokenizer = load_tokenizer(ref)
    spec = "model" if getattr(tokenizer, "chat_template", None) else template
    model = load_model(ref)
    em = from_objects(label, model, tokenizer, ref=ref, template=spec)
    if em.renderer.added_tokens:
        model.resize_token_embeddings(len(tokenizer))
    return em
