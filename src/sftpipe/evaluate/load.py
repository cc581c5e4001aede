"""What eval needs of a model: (model, tokenizer, renderer) plus a label, from a run, a checkpoint or a model.

The eval code only ever sees `EvalModel`; `from_objects` builds one from objects already in memory (tests,
notebooks). Runs load through `sftpipe.train.load.load_run` (the train stage owns the run format).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..render import ChatRenderer
from ..templates import load_template


@dataclass
class EvalModel:
    """A model ready for eval: its tokenizer and the renderer with the template it is served with."""

    label: str  # "final", "checkpoint-200", "base", ...
    model: Any
    tokenizer: Any
    renderer: ChatRenderer
    ref: str = ""  # where it came from (run folder, checkpoint folder, model name)
    info: dict = field(default_factory=dict)  # run.json of a run, else {}

    def describe(self) -> dict:
        """JSON-ready identity: label, origin and template."""
        return {"label": self.label, "ref": self.ref, "template": {"name": self.renderer.template.name,
                                                                   "sha256": self.renderer.template.sha256}}


def from_objects(label: str, model, tokenizer, renderer: ChatRenderer | None = None, *, ref: str = "",
                 info: dict | None = None, template: str = "model", train_on: str = "all_assistant") -> EvalModel:
    """An EvalModel from objects in memory; without a renderer, one is built from the tokenizer's template."""
    if renderer is None:
        renderer = ChatRenderer(tokenizer, load_template(template, tokenizer), train_on=train_on)
    return EvalModel(label, model, tokenizer, renderer, ref, info or {})


def checkpoints(run_dir: Path) -> list[str]:
    """Names of a run's complete checkpoints (train's completion marker checked), by step."""
    from ..train.callbacks import checkpoint_folders, is_complete

    return [p.name for p in checkpoint_folders(Path(run_dir) / "checkpoints") if is_complete(p)]


def _train_on(info: dict) -> str:
    return ((info.get("config") or {}).get("render") or {}).get("train_on", "all_assistant")


def load_run_model(run_dir: Path, checkpoint: str | None = None, *, label: str | None = None) -> EvalModel:
    """A run's final weights (or one checkpoint), served with the template saved in the run's tokenizer."""
    from ..train.load import load_run  # the train stage owns the run format

    run_dir = Path(run_dir)
    model, tokenizer, info = load_run(run_dir, checkpoint, merge=True)  # same function, faster generation
    ref = str(run_dir / "checkpoints" / checkpoint) if checkpoint else str(run_dir)
    return from_objects(label or checkpoint or "final", model, tokenizer, ref=ref, info=info,
                        train_on=_train_on(info))


def load_reference(ref: str, *, label: str, template: str = "model") -> EvalModel:
    """A baseline: a run folder, a run's checkpoint folder, or a model reference (embedded name / HF folder).

    A plain model is served with its own chat template, or `template` when it has none.
    """
    from ..models import load_model, load_tokenizer

    path = Path(ref)
    if (path / "run.json").is_file():
        return load_run_model(path, label=label)
    if path.parent.name == "checkpoints" and (path.parent.parent / "run.json").is_file():
        return load_run_model(path.parent.parent, path.name, label=label)
    tokenizer = load_tokenizer(ref)
    spec = "model" if getattr(tokenizer, "chat_template", None) else template
    model = load_model(ref)
    em = from_objects(label, model, tokenizer, ref=ref, template=spec)
    if em.renderer.added_tokens:
        model.resize_token_embeddings(len(tokenizer))
    return em
