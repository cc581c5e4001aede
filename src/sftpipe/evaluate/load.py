"""What eval needs of a model: (model, tokenizer, renderer) plus a label, from a run, a checkpoint or a model.

The eval code only ever sees `EvalModel`; `from_objects` builds one from objects already in memory (tests,
notebooks). Runs load through `sftpipe.runs` (the owner of the run folder and of how a run is served), so a run is
evaluated with its template checked and the render options it was trained with.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..render import ChatRenderer
from ..errors import ModelError
from ..runs import RunInfo, RunRef, checkpoint_names, load_for_serving, resolve
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
                 info: RunInfo | None = None, template: str = "model") -> EvalModel:
    """An EvalModel from objects in memory; without a renderer, one is built from the tokenizer's template."""
    if renderer is None:
        renderer = ChatRenderer(tokenizer, load_template(template, tokenizer))
    return EvalModel(label, model, tokenizer, renderer, ref, info)


checkpoints = checkpoint_names  # names of a run's complete checkpoints, by step


def load_run_model(run_dir: Path, checkpoint: str | None = None, *, label: str | None = None) -> EvalModel:
    """A run's final weights (or one checkpoint), rendered as the run is served: its template checked against
    run.json and parity.json, every render option it was trained with."""
    run_dir = Path(run_dir)
    loaded = load_for_serving(RunRef(run_dir, checkpoint))  # adapter merged: same function, faster generation
    ref = str(run_dir / "checkpoints" / checkpoint) if checkpoint else str(run_dir)
    return EvalModel(label or checkpoint or "final", loaded.model, loaded.tokenizer, loaded.renderer, ref,
                     loaded.info)


def load_reference(ref: str, *, label: str, template: str = "model") -> EvalModel:
    """A baseline: a run folder, a run's checkpoint folder, or a model reference (embedded name / HF folder).

    A plain model is served with its own chat template, or `template` when it has none.
    """
    from ..models import load_model, load_tokenizer

    try:
        run = resolve(ref)
    except ModelError:  # not a run: a plain model
        pass
    else:
        return load_run_model(run.run_dir, run.checkpoint, label=label)
    tokenizer = load_tokenizer(ref)
    spec = "model" if getattr(tokenizer, "chat_template", None) else template
    model = load_model(ref)
    em = from_objects(label, model, tokenizer, ref=ref, template=spec)
    if em.renderer.added_tokens:
        model.resize_token_embeddings(len(tokenizer))
    return em
