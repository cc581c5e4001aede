"""`sftpipe doctor`: the guide's production checklist and common pitfalls, checked against a config, its data and
its runs. A check is one small function (`@check`) with a docstring quoting its guide line and a `Finding`."""

from .base import CHECKS, VERDICTS, Check, Finding, Outcome, check, exit_code, run_checks
from .context import Context

__all__ = ["CHECKS", "VERDICTS", "Check", "Context", "Finding", "Outcome", "check", "exit_code", "run_checks"]
