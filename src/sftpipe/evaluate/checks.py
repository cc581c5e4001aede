"""Deterministic generation checks: JSON extraction, JSON Schema validity, policy rules, field correctness.

Rules file (YAML), one entry per rule:

    rules:
      - id: no_instant_refund                  # unique, required
        description: never promise an instant refund
        must_not_contain: ["instant refund", "refunded immediately"]
      - id: fraud_warning
        categories: [account_lockout, chargeback, fraud_suspicion]   # omit: the rule applies to every category
        regex: true
        must_contain: ["(?i)never share (your )?(password|card|one-time code)"]

A reply violates a rule (for a category the rule applies to) when `must_contain` is non-empty and NONE of its
entries match (any-of: one match is enough), or when ANY entry of `must_not_contain` matches. Entries are
case-insensitive plain phrases, or Python regexes searched as written when `regex: true` (add `(?i)` for case
folding). Every rule needs at least one of the two lists.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, best_match
from pydantic import BaseModel, ConfigDict, ValidationError

from ..errors import ConfigError

_FENCE = re.compile(r"```[ \t]*(?:json)?[ \t]*\n?(.*?)```", re.IGNORECASE | re.DOTALL)


def _balanced_end(text: str, start: int) -> int | None:
    """Index just past the `}` that closes the `{` at `start`, skipping braces inside JSON strings."""
    depth, in_string, escaped = 0, False, False
    for i in range(start, len(text)):
        c = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i + 1
    return None


def _scan(text: str) -> tuple[list[Any], int]:
    """All JSON values found, in text order, and the number of JSON-looking candidates that failed to parse."""
    found: list[tuple[int, Any]] = []
    invalid = 0
    masked = list(text)
    for m in _FENCE.finditer(text):
        body = m.group(1).strip()
        masked[m.start():m.end()] = " " * (m.end() - m.start())
        if not body.startswith(("{", "[")):
            continue
        try:
            found.append((m.start(), json.loads(body)))
        except json.JSONDecodeError:
            invalid += 1
    rest = "".join(masked)
    i = rest.find("{")
    while i != -1:
        end = _balanced_end(rest, i)
        try:
            if end is None:
                raise json.JSONDecodeError("unbalanced braces", rest, i)
            found.append((i, json.loads(rest[i:end])))
            i = rest.find("{", end)
        except json.JSONDecodeError:
            invalid += 1
            i = rest.find("{", i + 1)  # an invalid outer object may still hold a valid inner one
    found.sort(key=lambda t: t[0])
    return [v for _, v in found], invalid


def extract_json(text: str) -> list[Any]:
    """JSON values in ```json fences (objects or arrays) and bare balanced `{...}` objects, in text order.

    >>> extract_json('Offer: {"amount": 5, "note": "a } brace"} and {broken}')
    [{'amount': 5, 'note': 'a } brace'}]
    """
    return _scan(text)[0]


def schema_valid(text: str, schema: dict) -> tuple[bool, str | None]:
    """(True, None) if some extracted JSON value validates; else (False, "no_json" | "invalid_json" | error)."""
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as e:
        raise ValueError(f"invalid JSON Schema: {e.message}. Fix the schema (Draft 2020-12)") from None
    values, invalid = _scan(text)
    if not values:
        return False, ("invalid_json" if invalid else "no_json")
    validator = Draft202012Validator(schema)
    first_error = None
    for value in values:
        error = best_match(validator.iter_errors(value))
        if error is None:
            return True, None
        if first_error is None:
            where = "/".join(str(p) for p in error.absolute_path)
            first_error = f"{where}: {error.message}" if where else error.message
    return False, first_error


class _RuleSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    description: str = ""
    categories: list[str] | None = None
    must_contain: list[str] = []
    must_not_contain: list[str] = []
    regex: bool = False


class _RulesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rules: list[_RuleSpec]


@dataclass
class Rule:
    """A policy rule; patterns are compiled once, at construction."""

    id: str
    categories: list[str] | None
    must_contain: list[str]
    must_not_contain: list[str]
    regex: bool = False
    description: str = ""
    _contain: list[re.Pattern] = field(init=False, repr=False, compare=False)
    _forbid: list[re.Pattern] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.must_contain and not self.must_not_contain:
            raise ValueError(f"rule '{self.id}': needs must_contain or must_not_contain (both are empty)")
        self._contain = [self._compile("must_contain", p) for p in self.must_contain]
        self._forbid = [self._compile("must_not_contain", p) for p in self.must_not_contain]

    def _compile(self, field_name: str, pattern: str) -> re.Pattern:
        if not self.regex:
            return re.compile(re.escape(pattern), re.IGNORECASE)
        try:
            return re.compile(pattern)
        except re.error as e:
            raise ValueError(f"rule '{self.id}', field '{field_name}': invalid regex {pattern!r} ({e}); "
                             "fix it or set regex: false for a plain phrase") from None

    def applies_to(self, category: str) -> bool:
        """True if the rule covers replies of this category."""
        return self.categories is None or category in self.categories

    def violated_by(self, text: str) -> bool:
        """True if `text` misses every required pattern or hits a forbidden one."""
        if self._contain and not any(p.search(text) for p in self._contain):
            return True
        return any(p.search(text) for p in self._forbid)


def load_rules(path: str | Path) -> list[Rule]:
    """Read and validate a rules YAML file; every problem is reported at once, naming the rule id and field."""
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    raw = data.get("rules") if isinstance(data, dict) else None
    try:
        spec = _RulesFile.model_validate(data)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            loc = list(err["loc"])
            if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int) and isinstance(raw, list):
                item = raw[loc[1]]
                rid = item.get("id", f"#{loc[1]}") if isinstance(item, dict) else f"#{loc[1]}"
                field_name = ".".join(str(p) for p in loc[2:]) or "(rule)"
                problems.append(f"rule '{rid}', field '{field_name}': {err['msg']}")
            else:
                problems.append(f"{'.'.join(str(p) for p in loc) or '(top level)'}: {err['msg']}; "
                                "expected a mapping with a 'rules' list")
        raise ConfigError(str(path), problems) from None
    problems, rules, seen = [], [], set()
    for r in spec.rules:
        if r.id in seen:
            problems.append(f"rule '{r.id}', field 'id': duplicate id; ids must be unique")
        seen.add(r.id)
        try:
            rules.append(Rule(**r.model_dump()))
        except ValueError as e:
            problems.append(str(e))
    if problems:
        raise ConfigError(str(path), problems)
    return rules


def violations(text: str, category: str, rules: list[Rule]) -> list[str]:
    """Ids of the rules that apply to `category` and that `text` violates, in rule order.

    >>> violations("You will be refunded immediately.", "refund",
    ...            [Rule("no_instant", None, [], ["refunded immediately"])])
    ['no_instant']
    """
    return [r.id for r in rules if r.applies_to(category) and r.violated_by(text)]


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def field_correctness(text: str, expected: dict, *, tolerance: float = 0.005) -> dict[str, bool]:
    """Per expected field: does the first extracted JSON object carry that value (numbers within `tolerance`)?

    >>> field_correctness('{"amount": 12.5, "type": "full"}', {"amount": 12.499, "type": "partial"})
    {'amount': True, 'type': False}
    """
    obj = next((v for v in extract_json(text) if isinstance(v, dict)), None)
    out = {}
    for key, want in expected.items():
        if obj is None or key not in obj:
            out[key] = False
        elif _number(want):
            got = obj[key]
            out[key] = _number(got) and abs(got - want) <= tolerance
        elif isinstance(want, str):
            out[key] = isinstance(obj[key], str) and obj[key].strip() == want.strip()
        else:
            out[key] = obj[key] == want
    return out
