"""What the checks look at, read once and lazily: the config (validated, and as written), the run folder (through
`sftpipe.runs`), the curated folder's report.json, the training and eval data, and the run's tokenizer."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from ..config import SftpipeConfig
from ..conversation import Conversation
from ..errors import SftpipeError
from ..readers import read_conversations
from ..runs import RunInfo, is_run, read_info, require_complete


def read_json(path: Path) -> dict | None:
    """A JSON object file, or None when it is missing or not a JSON object."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


@dataclass
class Context:
    """Inputs of one doctor run. `run_dir` None: the config's own run (`<train.output_dir>/<name>`) if it exists."""

    cfg: SftpipeConfig
    config_path: Path | None = None
    run_dir: Path | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.raw and self.config_path is not None and Path(self.config_path).is_file():
            loaded = yaml.safe_load(Path(self.config_path).read_text(encoding="utf-8"))
            self.raw = loaded if isinstance(loaded, dict) else {}
        if self.run_dir is None:
            own = Path(self.cfg.train.output_dir) / self.cfg.name
            self.run_dir = own if is_run(own) else None

    # --- the config ---------------------------------------------------------------------------------------------
    def explicit(self, dotted: str) -> bool:
        """Whether the config file sets `dotted` (e.g. "render.train_on") rather than leaving the default."""
        node: Any = self.raw
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return False
            node = node[part]
        return True

    def section(self, name: str) -> dict[str, Any]:
        """A config section as a dict, also one this sftpipe's config does not model yet (dpo, serve, export)."""
        raw, modeled = self.raw.get(name), self.cfg.model_dump(mode="json").get(name)
        return {**(raw if isinstance(raw, dict) else {}), **(modeled if isinstance(modeled, dict) else {})}

    @property
    def where(self) -> str:
        return str(self.config_path or "config")

    # --- the run ------------------------------------------------------------------------------------------------
    @cached_property
    def run(self) -> tuple[RunInfo | None, str]:
        """(run.json, why there is none / whether it is complete)."""
        if self.run_dir is None:
            return None, (f"no run folder (looked for {Path(self.cfg.train.output_dir) / self.cfg.name}/run.json; "
                          "pass --run runs/NAME)")
        try:
            info = read_info(self.run_dir)
        except SftpipeError as e:
            return None, str(e)
        try:
            require_complete(self.run_dir)
            return info, "complete"
        except SftpipeError as e:
            return info, str(e)

    @property
    def info(self) -> RunInfo | None:
        return self.run[0]

    def run_file(self, name: str) -> dict | None:
        """A JSON file of the run folder (parity.json, generation_config.json, tokenizer_config.json)."""
        return read_json(self.run_dir / name) if self.run_dir is not None else None

    def runs(self) -> list[tuple[Path, RunInfo]]:
        """Every readable run folder beside this run and in train.output_dir / dpo.output_dir."""
        dpo_out = self.section("dpo").get("output_dir")
        roots = {Path(self.cfg.train.output_dir)} | ({self.run_dir.parent} if self.run_dir else set()) | \
            ({Path(dpo_out)} if isinstance(dpo_out, str) and dpo_out else set())
        found = []
        for root in sorted(roots):
            for d in sorted(root.glob("*/run.json")) if root.is_dir() else []:
                try:
                    found.append((d.parent, read_info(d.parent)))
                except SftpipeError:
                    pass
        return found

    # --- data ---------------------------------------------------------------------------------------------------
    def _read(self, paths: list[str]) -> list[Conversation]:
        existing = [p for p in paths if Path(p).is_file()]
        if not existing:
            return []
        d = self.cfg.data
        return read_conversations(existing, format=d.format, column_map=d.column_map or None,
                                  on_error="skip").conversations

    @cached_property
    def train(self) -> list[Conversation]:
        """The training conversations (data.train; unreadable rows skipped)."""
        return self._read(self.cfg.data.train)

    @cached_property
    def eval(self) -> list[Conversation]:
        """The held-out conversations (data.eval)."""
        return self._read(self.cfg.data.eval)

    @cached_property
    def curated(self) -> tuple[Path | None, dict | None]:
        """(report.json path, its contents): curate.out_dir's, else the one beside the first training file."""
        candidates = [Path(self.cfg.curate.out_dir) / "report.json"]
        candidates += [Path(p).parent / "report.json" for p in self.cfg.data.train[:1]]
        for path in candidates:
            if path.is_file():
                return path, read_json(path)
        return None, None

    def stage(self, name: str) -> dict | None:
        """One stage's entry in the curate report (None when it did not run)."""
        report = self.curated[1] or {}
        return next((s for s in report.get("stages", []) if s.get("stage") == name), None)

    # --- the tokenizer ------------------------------------------------------------------------------------------
    @cached_property
    def tokenizer(self):
        """The run's saved tokenizer (what serving loads), else the config's."""
        from ..models import load_tokenizer
        from ..runs import load_tokenizer as load_run_tokenizer

        if self.run_dir is not None and (self.run_dir / "tokenizer_config.json").is_file():
            return load_run_tokenizer(self.run_dir)
        return load_tokenizer(self.cfg.model.tokenizer or self.cfg.model.name)
