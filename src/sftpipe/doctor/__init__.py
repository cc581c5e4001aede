"""`sftpipe doctor`: the guide's production checklist and common pitfalls, checked against a config, its data and
its runs. A check is one small function (`@check`) with a docstring quoting its guide line and a `Finding`.

This module is the one that imports the check modules (importing one registers its checks, in this order); `base`
holds the registry and imports none of them.
"""

from . import checks_plan, checks_data, checks_template, checks_run, checks_cluster  # noqa: F401  (registers)
from .base import CHECKS, VERDICTS, Check, Finding, Outcome, check, exit_code, run_check
from .context import Context

__all__ = ["CHECKS", "VERDICTS", "Check", "Context", "Finding", "Outcome", "check", "exit_code", "run_checks"]


def run_checks(ctx: Context, only: list[str] | None = None) -> list[Finding]:
    """Every registered check (or those named in `only`), in registration order."""
    unknown = sorted(set(only or []) - {c.name for c in CHECKS})
    if unknown:
        raise ValueError(f"unknown doctor check(s) {unknown}; known: {', '.join(c.name for c in CHECKS)}")
    return [run_check(c, ctx) for c in CHECKS if not only or c.name in only]
