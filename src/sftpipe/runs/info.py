"""run.json as a typed, versioned record: what a run was trained from, how, and what it measured.

`RunInfo` is the schema; `read_info` / `write_info` are its only reader and writer. A run.json written before the
schema had a version (sftpipe 0.1, wave 1) is read as version 0 and upgraded in memory: same fields, `kind` sft.
Fields the schema does not name are kept as they are (`extra="allow"`), so a newer writer's additions survive.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from ..errors import ModelError
from ..io import write_json

SCHEMA_VERSION = 1
RUN_JSON = "run.json"


class TemplateInfo(BaseModel):
    """The chat template a run was trained with (the same text is in the run's tokenizer_config.json)."""

    model_config = ConfigDict(extra="allow")
    name: str
    sha256: str
    source: str = ""
    added_tokens: list[str] = []
    end_of_turn_ids: list[int] = []

    @classmethod
    def of(cls, renderer, end_of_turn_ids: list[int]) -> TemplateInfo:
        """The template record of a `render.Renderer` (its template's name, sha256 and text, its added tokens)."""
        t = renderer.template
        return cls(name=t.name, sha256=t.sha256, source=t.source, added_tokens=renderer.added_tokens,
                   end_of_turn_ids=end_of_turn_ids)


class RunInfo(BaseModel):
    """The contents of run.json. `config` is the whole validated project config the run was started with."""

    model_config = ConfigDict(extra="allow")
    schema_version: int = SCHEMA_VERSION
    kind: Literal["sft", "dpo"] = "sft"
    status: Literal["running", "complete"] = "running"
    config: dict[str, Any]
    base_model: str
    base_model_path: str | None = None  # where the base weights were read from (a local folder or cache)
    mode: Literal["lora", "qlora", "full"]
    device: str = "cpu"
    precision: str = "fp32"
    batching: str = "padded"
    world_size: int = 1  # of the latest segment
    # stretches of optimizer steps trained with one world size: {world_size, grad_accum, from_step, to_step}
    segments: list[dict[str, Any]] = []
    learning_rate: float | None = None
    effective_batch: dict[str, float] = {}
    examples_seen: dict[str, int] = {}  # training examples stepped through, per record category (SFT)
    vocab_size: int | None = None
    trainable_parameters: int | None = None
    micro_batch_max_tokens: int | None = None
    pad_to_multiple_of: int | None = None
    data: dict[str, Any] = {}
    template: TemplateInfo | None = None  # None only in hand-made or pre-schema run.json files
    mask_report: dict[str, Any] = {}
    eval_mask_report: dict[str, Any] | None = None
    parity: dict[str, Any] | None = None
    versions: dict[str, str] = {}
    git: dict[str, Any] | None = None
    git_commit: str | None = None
    resumed_from: list[str] = []
    metrics: list[dict[str, Any]] = []
    best_checkpoint: str | None = None
    results: dict[str, Any] = {}
    eval: dict[str, Any] | None = None
    reference: dict[str, Any] | None = None  # DPO: the SFT run (and checkpoint, sha256) it started from

    @property
    def name(self) -> str:
        """The run's name (config `name`)."""
        return str(self.config.get("name", ""))

    def section(self, name: str) -> dict[str, Any]:
        """One section of the run's config (`{}` when absent), e.g. `info.section("render")["max_length"]`."""
        value = self.config.get(name)
        return value if isinstance(value, dict) else {}

    def to_json(self) -> dict[str, Any]:
        """The JSON object written to run.json."""
        return self.model_dump(mode="json")


def read_info(run_dir: str | Path) -> RunInfo:
    """run.json of a run folder, validated (old unversioned files upgraded); ModelError naming the fix otherwise."""
    path = Path(run_dir) / RUN_JSON
    if not path.is_file():
        raise ModelError(f"{run_dir} has no run.json, so it is not a run folder; fix: give runs/<name> as written "
                         "by `sftpipe train`")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelError(f"{path}: not valid JSON ({e}); fix: re-run `sftpipe train` for this run") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path}: expected a JSON object; fix: re-run `sftpipe train` for this run")
    version = data.get("schema_version", 0)
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise ModelError(f"{path}: schema_version {version!r} is newer than this sftpipe reads (<= "
                         f"{SCHEMA_VERSION}); fix: upgrade sftpipe")
    if version == 0:  # wave-1 run.json: same fields, no version, no kind; complete unless it says otherwise
        data = {**data, "schema_version": SCHEMA_VERSION, "kind": data.get("kind", "sft"),
                "status": data.get("status", "complete"), "legacy": True}
    try:
        return RunInfo.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors())
        raise ModelError(f"{path}: not a valid run.json ({problems}); fix: re-run `sftpipe train` for this run") \
            from None


def write_info(run_dir: str | Path, info: RunInfo) -> Path:
    """Write run.json atomically; returns its path."""
    path = Path(run_dir) / RUN_JSON
    write_json(path, info.to_json())
    return path
