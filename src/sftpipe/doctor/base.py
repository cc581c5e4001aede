"""A doctor check: one small function with a name, a docstring whose first line quotes the guide line it maps to,
and a `Finding` (verdict, evidence, fix). `@check` registers it; `sftpipe.doctor.run_checks` runs them all in order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

from ..errors import SftpipeError

if TYPE_CHECKING:
    from .context import Context

Verdict = Literal["PASS", "WARN", "FAIL", "SKIP"]
VERDICTS: tuple[str, ...] = ("PASS", "WARN", "FAIL", "SKIP")


@dataclass
class Finding:
    """What one check found: verdict, evidence (numbers, file:line, example ids) and the fix (empty on PASS).
    A SKIP's evidence is the reason it could not run."""

    check: str
    verdict: Verdict
    evidence: str
    fix: str = ""
    guide: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Outcome:
    """A check function's answer, before the registry adds its name and guide line."""

    verdict: Verdict
    evidence: str
    fix: str = ""


def ok(evidence: str) -> Outcome:
    return Outcome("PASS", evidence)


def warn(evidence: str, fix: str) -> Outcome:
    return Outcome("WARN", evidence, fix)


def fail(evidence: str, fix: str) -> Outcome:
    return Outcome("FAIL", evidence, fix)


def skip(reason: str) -> Outcome:
    return Outcome("SKIP", reason)


def no_run(ctx: Context) -> Outcome:
    """SKIP for a check that needs the run: why there is no run.json to read."""
    return skip(ctx.run[1])


def worst(*outcomes: Outcome) -> Outcome:
    """Several findings of one check as one: the worst verdict, every non-PASS evidence and fix joined.

    >>> worst(ok("a"), warn("b", "fix b"), fail("c", "fix c")).verdict
    'FAIL'
    >>> worst(ok("a"), ok("b")).evidence
    'a; b'
    """
    rank = {"PASS": 0, "SKIP": 1, "WARN": 2, "FAIL": 3}
    top = max(outcomes, key=lambda o: rank[o.verdict]).verdict
    shown = outcomes if top == "PASS" else [o for o in outcomes if o.verdict != "PASS"]
    return Outcome(top, "; ".join(o.evidence for o in shown), "; ".join(dict.fromkeys(o.fix for o in shown if o.fix)))


@dataclass(frozen=True)
class Check:
    """A registered check: its name, the guide line it maps to, and the function."""

    name: str
    guide: str
    fn: Callable[[Context], Outcome]


CHECKS: list[Check] = []


def check(name: str) -> Callable[[Callable[[Context], Outcome]], Callable[[Context], Outcome]]:
    """Register a check under `name`; its docstring's first paragraph quotes the guide line it maps to."""
    def register(fn: Callable[[Context], Outcome]) -> Callable[[Context], Outcome]:
        if any(c.name == name for c in CHECKS):
            raise ValueError(f"doctor check {name!r} registered twice")
        first = (fn.__doc__ or "").strip().split("\n\n")[0]
        CHECKS.append(Check(name, " ".join(line.strip() for line in first.splitlines()), fn))
        return fn
    return register


def run_check(c: Check, ctx: Context) -> Finding:
    """One check on `ctx`; an unreadable input (a SftpipeError) is that check's FAIL, with the error as evidence,
    and so is a crash of the check itself (named as a doctor bug), so that one broken check hides no other."""
    try:
        out = c.fn(ctx)
    except SftpipeError as e:
        out = fail(f"could not read its inputs: {e}", "fix the file named above, then re-run `sftpipe doctor`")
    except Exception as e:  # noqa: BLE001  (reported, not swallowed: the check's row says it crashed)
        out = fail(f"the check crashed: {type(e).__name__}: {e}", "a doctor bug: report it with this message")
    return Finding(c.name, out.verdict, out.evidence, out.fix, c.guide)


def exit_code(findings: list[Finding], strict: bool = False) -> int:
    """0 when nothing fails (with `strict`, nothing warns either), else 1.

    >>> f = [Finding("a", "PASS", ""), Finding("b", "WARN", "")]
    >>> exit_code(f), exit_code(f, strict=True)
    (0, 1)
    """
    bad = {"FAIL", "WARN"} if strict else {"FAIL"}
    return int(any(f.verdict in bad for f in findings))
