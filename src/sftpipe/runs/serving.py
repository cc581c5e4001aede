"""How a run is served: which run a reference names, the proof that its tokenizer's template is the one training
used, and the renderer with every render option the run was trained with. Serve, eval, export, DPO and doctor all
go through here, so none of them can serve a run with another render than the one it trained on.

A reference is a run folder (`runs/<name>`, holding run.json) or one of its checkpoint folders
(`runs/<name>/checkpoints/checkpoint-<step>`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from ..config import RenderConfig, format_errors
from ..errors import ModelError, TemplateError
from ..models import resolve_model
from .folder import require_complete
from .info import RUN_JSON, RunInfo
from .load import load_run, load_tokenizer, weights_folder

if TYPE_CHECKING:  # render imports transformers: loaded when a renderer is built, not with sftpipe.runs
    from ..render import ChatRenderer


@dataclass(frozen=True)
class RunRef:
    """A run folder and, when the reference names one, one of its checkpoints (its folder name)."""

    run_dir: Path
    checkpoint: str | None = None


def is_run(path: str | Path) -> bool:
    """Whether `path` is a run folder (it holds run.json).

    >>> is_run("/nonexistent")
    False
    """
    return (Path(path) / RUN_JSON).is_file()


def resolve(ref: str | Path) -> RunRef:
    """The run (and checkpoint) `ref` names: a run folder or one of its checkpoint folders; ModelError otherwise.

    >>> resolve("/nonexistent")
    Traceback (most recent call last):
    ...
    sftpipe.errors.ModelError: /nonexistent is neither a run folder (with run.json) nor one of its checkpoints; ...
    """
    path = Path(ref)
    if is_run(path):
        return RunRef(path)
    if path.parent.name == "checkpoints" and is_run(path.parent.parent):
        return RunRef(path.parent.parent, path.name)
    raise ModelError(f"{ref} is neither a run folder (with run.json) nor one of its checkpoints; fix: pass "
                     "runs/<name> or runs/<name>/checkpoints/checkpoint-<step>")


def render_config(info: RunInfo) -> RenderConfig:
    """The `render` section a run was trained with: keys an older run.json lacks take their defaults, keys an
    older sftpipe wrote and this one dropped (wave 1's `batching`) are ignored; ModelError for a bad value."""
    section = {k: v for k, v in info.section("render").items() if k in RenderConfig.model_fields}
    try:
        return RenderConfig.model_validate(section)
    except ValidationError as e:
        problems = "; ".join(f"render.{problem}" for problem in format_errors(e, RenderConfig))
        raise ModelError(f"run.json of run {info.name!r}: {problems}; fix: re-run `sftpipe train` for this run") \
            from None


def serving_renderer(tokenizer, info: RunInfo) -> ChatRenderer:
    """The renderer a run is served with: its saved tokenizer's template and every render option it trained with."""
    from ..render import ChatRenderer
    from ..templates import load_template

    return ChatRenderer.configured(tokenizer, load_template("model", tokenizer), render_config(info))


def template_sha256(source: str | None) -> str | None:
    """The sha256 of a chat template's text (what run.json and parity.json record); None when there is none.

    >>> template_sha256("x") == hashlib.sha256(b"x").hexdigest(), template_sha256(None)
    (True, None)
    """
    return hashlib.sha256(source.encode("utf-8")).hexdigest() if isinstance(source, str) else None


def check_template(run_dir: Path, tokenizer, info: RunInfo) -> str:
    """The sha256 of the tokenizer's template, once it equals run.json's and parity.json's and parity.json records
    no mismatch; TemplateError (one line, with the fix) otherwise."""
    run_dir = Path(run_dir)
    source = getattr(tokenizer, "chat_template", None)
    if not isinstance(source, str) or not source:
        raise TemplateError(f"{run_dir}: the run's tokenizer has no chat template; fix: re-run `sftpipe train`")
    sha = template_sha256(source)
    if info.template is None:
        raise TemplateError(f"{run_dir / RUN_JSON} records no template sha256, so the served render cannot be "
                            "proved equal to training's; fix: re-run `sftpipe train` with this sftpipe")
    parity_file = run_dir / "parity.json"
    try:
        parity = json.loads(parity_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise TemplateError(f"{parity_file} is missing or unreadable, so the served render cannot be proved equal "
                            "to training's; fix: re-run `sftpipe train`") from None
    parity = parity if isinstance(parity, dict) else {}
    for where, recorded in ((RUN_JSON, info.template.sha256), ("parity.json", parity.get("template_sha256"))):
        if recorded != sha:
            raise TemplateError(f"{run_dir}: the tokenizer's chat template (sha256 {sha[:12]}) differs from the one "
                                f"{where} records ({str(recorded)[:12]}): the server would not render what "
                                "training rendered; fix: restore the run's tokenizer_config.json or re-run "
                                "`sftpipe train`")
    if parity.get("text_mismatches") or parity.get("token_mismatches"):
        raise TemplateError(f"{parity_file} records render mismatches; fix: re-run `sftpipe train`")
    return sha


@dataclass(frozen=True)
class ServedRun:
    """A run loaded to be served: the model (adapter folded in), tokenizer, run.json, renderer, template sha256."""

    model: Any  # None: loaded without weights (a front)
    tokenizer: Any
    info: RunInfo
    renderer: ChatRenderer
    template_sha256: str
    config: Any  # the model's transformers config


def load_for_serving(run: RunRef) -> ServedRun:
    """A complete run's final weights (or its checkpoint), its template checked before the weights load, with the
    renderer it trained with (what serve and eval generate with)."""
    sha = check_template(run.run_dir, load_tokenizer(run.run_dir), require_complete(run.run_dir))
    model, tokenizer, info = load_run(run.run_dir, run.checkpoint, merge=True)
    return ServedRun(model, tokenizer, info, serving_renderer(tokenizer, info), sha, model.config)


def load_front(run: RunRef) -> ServedRun:
    """What a front needs of a run, without its weights: tokenizer, renderer, template check and model config."""
    from transformers import AutoConfig

    tokenizer = load_tokenizer(run.run_dir)
    info = require_complete(run.run_dir)
    sha = check_template(run.run_dir, tokenizer, info)
    folder = weights_folder(run.run_dir, run.checkpoint)
    config = AutoConfig.from_pretrained(folder if (folder / "config.json").is_file() else resolve_model(
        info.base_model), trust_remote_code=False)
    # the run's vocabulary, as load_base resizes the base to it
    config.vocab_size = info.vocab_size or max(config.vocab_size, len(tokenizer))
    return ServedRun(None, tokenizer, info, serving_renderer(tokenizer, info), sha, config)
