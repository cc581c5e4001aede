"""The run folder: where a run writes, how it is committed, and how a reader knows it is complete.

`begin` picks the folder a new run writes into: `runs/<name>` itself, or, when it replaces a complete run
(`train.overwrite`), a hidden sibling `runs/.<name>.next` that `commit` swaps in only once the new run is complete,
so a run that fails never destroys the old one. `resume` reopens `runs/<name>` at its latest verified checkpoint.
`commit` writes the completion marker (`sftpipe_run.json`: stage, schema version, sha256 of every file) last.
Readers call `require_complete`, which names the stage to re-run. Run names are plain names, never paths.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, ModelError
from ..commit import manifest_ok, read_manifest, recover, swap_in, write_manifest
from .checkpoints import latest_checkpoint, remove_partial
from .info import SCHEMA_VERSION, RunInfo, read_info, write_info

RUN_MARKER = "sftpipe_run.json"
# Mutable after commit (eval adds its summary) or not part of the run's weights: not hashed in the marker.
UNHASHED = ("checkpoints", "eval", "tensorboard", "run.json", "README.md")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_name(name: str) -> str:
    """A run name: letters, digits and `-_.`, starting with a letter or digit (never a path).

    >>> check_name("harbor-sft_v1.2")
    'harbor-sft_v1.2'
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError("name", [f"{name!r} is not a plain run name (allowed: letters, digits and '-_.', "
                                   "starting with a letter or digit, at most 128 characters); fix: choose a name "
                                   "like harbor-sft; the run goes to <train.output_dir>/<name>"])
    return name


@dataclass
class RunFolder:
    """A run being written (`path`) and where it lives once committed (`final`)."""

    final: Path
    path: Path

    @property
    def checkpoints(self) -> Path:
        """Where the Trainer writes `checkpoint-<step>/` folders."""
        return self.path / "checkpoints"

    @classmethod
    def begin(cls, runs_dir: str | Path, name: str, *, resume: bool = False, overwrite: bool = False
              ) -> tuple[RunFolder, Path | None]:
        """The folder a run writes into, and the checkpoint to resume from (None for a fresh run). Checks only;
        `prepare` (main process) changes the disk."""
        final = Path(runs_dir) / check_name(name)
        old = final.with_name(f".{name}.old")
        if not final.exists() and old.is_dir():  # a crash between the two renames of a commit
            final = old
        if resume:
            latest = latest_checkpoint(final / "checkpoints", verify=True)
            if latest is None:
                raise ConfigError("--resume", [f"{final / 'checkpoints'} holds no complete checkpoint to resume "
                                               "from (or its files no longer match their sha256); fix: run "
                                               "without --resume"])
            return cls(Path(runs_dir) / name, final), latest
        if final.exists() and any(final.iterdir()):
            if not overwrite:
                raise ConfigError("train", [f"run folder {final} exists; fix: pass --resume to continue it, --set "
                                            "train.overwrite=true to replace it, or choose another --name"])
            return cls(Path(runs_dir) / name, final.with_name(f".{name}.next")), None  # old run kept until commit
        return cls(Path(runs_dir) / name, Path(runs_dir) / name), None

    def prepare(self, resume: bool = False) -> None:
        """Make the folder ready (main process): restore a half-committed run, clear a stale staging folder, drop
        incomplete checkpoints when resuming."""
        if self.path == self.final.with_name(f".{self.final.name}.old"):
            self.path = self.final
        recover(self.final)
        if self.path != self.final and not resume and self.path.exists():
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        if resume:
            remove_partial(self.checkpoints)

    def write_info(self, info: RunInfo) -> Path:
        """Write run.json into the folder being written."""
        return write_info(self.path, info)

    def write_start(self, info: RunInfo, tokenizer, parity_examples: list, generation_config,
                    rejects: list[dict]) -> None:
        """What a run holds before its first step: the serving files (parity summary into `info.parity`), the
        rejected records (rejects.jsonl, when any) and run.json."""
        from ..io import write_jsonl

        info.parity = write_serving_files(self.path, tokenizer, parity_examples, generation_config)
        if rejects:
            write_jsonl(self.path / "rejects.jsonl", rejects)
        self.write_info(info)

    def commit(self, stage: str) -> Path:
        """Mark the run complete (marker last), then swap it into place if it replaces an older run."""
        write_manifest(self.path, RUN_MARKER, skip=UNHASHED, stage=stage, schema_version=SCHEMA_VERSION)
        if self.path != self.final:
            self.path = swap_in(self.path, self.final)
        return self.final


def require_complete(run_dir: str | Path) -> RunInfo:
    """run.json of a committed run; ModelError naming the stage to re-run when the run never completed."""
    run_dir = Path(run_dir)
    info = read_info(run_dir)
    if getattr(info, "legacy", False) and info.status == "complete":
        return info  # written before completion markers existed
    marker = read_manifest(run_dir, RUN_MARKER)
    if marker is None or not manifest_ok(run_dir, RUN_MARKER):
        stage = (marker or {}).get("stage") or info.kind
        verb = "train" if stage == "sft" else stage
        raise ModelError(f"{run_dir} is not a complete run (no valid {RUN_MARKER}: the {stage} run did not finish, "
                         f"or its files changed since); fix: `sftpipe {verb} --resume` or re-run `sftpipe {verb}`")
    return info


def write_serving_files(folder: Path, tokenizer, examples: list, generation_config) -> dict:
    """What serving needs, written beside the weights: the tokenizer with the exact template, parity.json (the
    proof on `examples` that the saved tokenizer renders what training saw) and generation_config.json. Returns
    the parity summary; TemplateError when any example mismatches."""
    from ..errors import TemplateError
    from ..io import atomic_write_text, write_json
    from ..parity import check_parity, save_tokenizer

    save_tokenizer(tokenizer, folder)
    parity = check_parity(folder, examples)
    write_json(folder / "parity.json", parity)
    if parity["text_mismatches"] or parity["token_mismatches"]:
        raise TemplateError(f"parity failed ({parity['text_mismatches']} text / {parity['token_mismatches']} "
                            f"token mismatches, see {folder / 'parity.json'}); the saved tokenizer would serve a "
                            "different render than training would see")
    atomic_write_text(folder / "generation_config.json", generation_config.to_json_string())
    return {k: parity[k] for k in ("examples_checked", "text_mismatches", "token_mismatches")}


def point_adapter_at_hub_id(folder: Path, base_model: str) -> None:
    """peft records the base weights' local (cache) path in adapter_config.json; name the hub id instead where
    one is known, so the adapter loads elsewhere. The local path stays in run.json `base_model_path`."""
    import json

    from ..io import write_json
    from ..models import hub_id, hub_ref

    path = Path(folder) / "adapter_config.json"
    if hub_id(base_model) and path.is_file():
        config = json.loads(path.read_text(encoding="utf-8"))
        config["base_model_name_or_path"] = hub_id(base_model)
        if (found := hub_ref(base_model)) and found[1]:
            config["revision"] = found[1]  # peft loads the base at this commit
        write_json(path, config)
