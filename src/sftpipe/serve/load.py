"""What a server needs of a run: the model (adapter folded in), its tokenizer and renderer, the stop ids from its
generation config, and the proof that the template it will serve is the one training used."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ModelError, TemplateError
from ..generate import stop_token_ids
from ..render import ChatRenderer
from ..runs import RunInfo, load_run, load_tokenizer, require_complete, split_ref
from ..templates import load_template


@dataclass
class Served:
    """A loaded run, ready to serve."""

    name: str
    model: Any
    tokenizer: Any
    renderer: ChatRenderer
    info: RunInfo
    stop_ids: list[int]
    template_sha256: str
    run_dir: Path
    checkpoint: str | None


def check_template(run_dir: Path, tokenizer, info: RunInfo) -> str:
    """The sha256 of the tokenizer's template, once it equals run.json's and parity.json's; TemplateError (one
    line, with the fix) otherwise."""
    source = getattr(tokenizer, "chat_template", None)
    if not isinstance(source, str) or not source:
        raise TemplateError(f"{run_dir}: the run's tokenizer has no chat template; fix: re-run `sftpipe train`")
    sha = hashlib.sha256(source.encode("utf-8")).hexdigest()
    if info.template is None:
        raise TemplateError(f"{run_dir / 'run.json'} records no template sha256, so the served render cannot be "
                            "proved equal to training's; fix: re-run `sftpipe train` with this sftpipe")
    parity_file = run_dir / "parity.json"
    try:
        parity = json.loads(parity_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        raise TemplateError(f"{parity_file} is missing or unreadable, so the served render cannot be proved equal "
                            "to training's; fix: re-run `sftpipe train`") from None
    for where, recorded in (("run.json", info.template.sha256), ("parity.json", parity.get("template_sha256"))):
        if recorded != sha:
            raise TemplateError(f"{run_dir}: the tokenizer's chat template (sha256 {sha[:12]}) differs from the one "
                                f"{where} records ({str(recorded)[:12]}): the server would not render what "
                                "training rendered; fix: restore the run's tokenizer_config.json or re-run "
                                "`sftpipe train`")
    if parity.get("text_mismatches") or parity.get("token_mismatches"):
        raise TemplateError(f"{parity_file} records render mismatches; fix: re-run `sftpipe train`")
    return sha


def load_served(ref: str | Path) -> Served:
    """A run folder (runs/<name>) or one of its checkpoint folders, checked and loaded for serving."""
    found = split_ref(ref)
    if found is None:
        raise ModelError(f"{ref} is neither a run folder (with run.json) nor one of its checkpoints; fix: pass "
                         "runs/<name> or runs/<name>/checkpoints/checkpoint-<step>")
    run_dir, checkpoint = found
    sha = check_template(run_dir, load_tokenizer(run_dir), require_complete(run_dir))  # before the weights load
    model, tokenizer, info = load_run(run_dir, checkpoint, merge=True)
    renderer = ChatRenderer(tokenizer, load_template("model", tokenizer),
                            train_on=info.section("render").get("train_on", "all_assistant"))
    stops = stop_token_ids(renderer, run_dir / "generation_config.json")
    name = info.name or run_dir.name
    return Served(name if checkpoint is None else f"{name}/{checkpoint}", model, tokenizer, renderer, info, stops,
                  sha, run_dir, checkpoint)
