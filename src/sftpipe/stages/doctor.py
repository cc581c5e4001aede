"""`sftpipe doctor`: the guide's production checklist and common pitfalls, checked against a config, its data,
the curated folder's report.json and a run folder (read through `sftpipe.runs`).

Read top to bottom: gather the inputs (`Context`) -> run every registered check -> count verdicts. The CLI prints
the table (`show.print_doctor`) or JSON and exits 1 when a check fails (with --strict, also when one warns).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import SftpipeConfig
from ..doctor import Context, Finding, exit_code, run_checks
from ..errors import ConfigError
from ..runs import is_run


@dataclass
class DoctorResult:
    """Every check's finding, and what was looked at."""

    findings: list[Finding]
    config: str
    run_dir: Path | None

    @property
    def counts(self) -> dict[str, int]:
        c = Counter(f.verdict for f in self.findings)
        return {v: c.get(v, 0) for v in ("PASS", "WARN", "FAIL", "SKIP")}

    def exit_code(self, strict: bool = False) -> int:
        """0 when nothing fails (with `strict`, nothing warns either), else 1."""
        return exit_code(self.findings, strict)

    def to_json(self, strict: bool = False) -> dict[str, Any]:
        return {"config": self.config, "run": str(self.run_dir) if self.run_dir else None, "counts": self.counts,
                "strict": strict, "exit_code": self.exit_code(strict),
                "checks": [f.to_dict() for f in self.findings]}


def run(cfg: SftpipeConfig, *, config_path: Path | None = None, run_dir: Path | None = None,
        only: list[str] | None = None) -> DoctorResult:
    """Run the checks on `cfg` (relative paths from the current folder) and `run_dir` (default: the config's own
    run, `<train.output_dir>/<name>`, when it exists)."""
    if run_dir is not None and not is_run(run_dir):  # a typo must not pass as a run whose checks all skip
        raise ConfigError("--run", [f"{run_dir} is not a run folder (it holds no run.json); fix: pass runs/<name> as "
                                    "written by `sftpipe train`, or leave --run out to check the config's own run"])
    ctx = Context(cfg, config_path=config_path, run_dir=Path(run_dir) if run_dir else None)
    return DoctorResult(run_checks(ctx, only), str(config_path or "config"), ctx.run_dir)
