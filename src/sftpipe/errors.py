"""Exception types. Every user-facing error names the value, the allowed set and the fix."""

from __future__ import annotations


class SftpipeError(Exception):
    """Base class for errors the CLI reports as one line, without a traceback."""


class ConfigError(SftpipeError):
    """The YAML config, a `--set` override or a command-line argument (`source`: "config", a file, "--index", ...)
    is invalid; `problems` lists every issue found.

    >>> str(ConfigError("--index", ["99 is out of range (0-9); fix: pass 0-9"]))
    '--index: 99 is out of range (0-9); fix: pass 0-9'
    >>> print(ConfigError("sftpipe.yaml", ["train.lr: ...", "lora.r: ..."]))
    sftpipe.yaml: 2 problems in config:
      - train.lr: ...
      - lora.r: ...
    """

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        if len(problems) == 1:
            text = f"{source}: {problems[0]}"
        else:
            where = "" if source.startswith("-") else " in config"
            text = f"{source}: {len(problems)} problems{where}:\n" + "\n".join(f"  - {p}" for p in problems)
        super().__init__(text)


class ModelError(SftpipeError):
    """A model or tokenizer cannot be resolved or loaded."""


class TemplateError(SftpipeError):
    """A chat template cannot be loaded, or renders in a way sftpipe cannot mask safely."""


class TaskError(SftpipeError):
    """Parallel tasks (curate's engine) did not finish, or one failed with an error that cannot be sent back."""


class RecordError(SftpipeError):
    """One input record is invalid. Carries where it came from and a stable `reason` code.

    >>> str(RecordError("unknown_role", "unknown role 'bot'", path="a.jsonl", line=3, index=1, field="role",
    ...                 fix="use one of system, user, assistant, tool"))
    "a.jsonl:3: message 1, field 'role': unknown role 'bot'. Fix: use one of system, user, assistant, tool"
    """

    def __init__(
        self,
        reason: str,
        message: str,
        *,
        path: str | None = None,
        line: int | None = None,
        index: int | None = None,
        field: str | None = None,
        fix: str | None = None,
    ):
        self.reason = reason
        self.message = message
        self.path = path
        self.line = line
        self.index = index
        self.field = field
        self.fix = fix
        super().__init__(self._format())

    def __reduce__(self):
        """Pickle by the constructor's arguments, so the error crosses process boundaries (worker pools, Ray)."""
        return _record_error, (self.to_dict(),)

    def located(self, path: str | None, line: int | None) -> RecordError:
        """Return a copy of this error that carries the file and line it came from."""
        return RecordError(self.reason, self.message, path=path, line=line, index=self.index,
                           field=self.field, fix=self.fix)

    def _format(self) -> str:
        where = ""
        if self.path is not None:
            where = f"{self.path}:{self.line}: " if self.line is not None else f"{self.path}: "
        elif self.line is not None:
            where = f"line {self.line}: "
        parts = []
        if self.index is not None:
            parts.append(f"message {self.index}")
        if self.field is not None:
            parts.append(f"field '{self.field}'")
        loc = (", ".join(parts) + ": ") if parts else ""
        fix = f". Fix: {self.fix}" if self.fix else ""
        return f"{where}{loc}{self.message}{fix}"

    def to_dict(self) -> dict:
        """The error as a JSON-ready dict, as written to rejects files."""
        return {"reason": self.reason, "message": self.message, "path": self.path, "line": self.line,
                "index": self.index, "field": self.field, "fix": self.fix}


def _record_error(fields: dict) -> RecordError:
    """A RecordError from its `to_dict()` (unpickling)."""
    return RecordError(**fields)
