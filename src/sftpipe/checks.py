r"""Reply checks shared by curate, eval and the demo: JSON extraction, schema validity, rules, field values.

The one JSON rule. A reply's JSON candidates are, in text order:
1. a fenced block opened by ```json (any case) or by a plain ``` fence whose body starts with `{` or `[`; the body
   runs to the closing ``` (or to the end of the text when the fence is never closed, as in a cut-off reply).
   Fences of any other language (```python) are code, not JSON, and nothing inside them is a candidate;
2. outside fences, a bare object: a `{` followed by `"` or `}` (after optional whitespace), up to its balanced
   `}` (braces inside JSON strings do not count; no balanced `}`: to the end of the text). Braces in prose such
   as `{name}` or `{'a': 1}` are not JSON; bare arrays are not scanned.
A candidate that `json.loads` rejects is broken JSON. With a schema, a reply is schema-valid when it has a candidate
and EVERY candidate parses and validates; no candidate is "no_json" (curate keeps the reply, eval counts it as not
valid). Field checks read the first parsed object.

>>> S = {"type": "object", "required": ["a"]}
>>> schema_valid('Done.\n```json\n{"a": 1}\n```', S), schema_valid('Sure: {"a": 1} as asked.', S)  # fenced, bare
((True, None), (True, None))
>>> schema_valid('{"a": 1} and {"b": 2}', S)  # two objects: each must validate
(False, "'a' is a required property")
>>> schema_valid('```json\n{"a": 1,}\n```', S), schema_valid('Fill in {name}, no JSON.', S)  # broken, none
((False, 'invalid_json'), (False, 'no_json'))

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

from .errors import ConfigError

_FENCE = re.compile(r"```[ \t]*([A-Za-z][\w.+-]*)?[ \t]*\n?(.*?)(?:```|\Z)", re.DOTALL)
_BARE = re.compile(r'\{(?=\s*["}])')


@dataclass(frozen=True)
class Found:
    """One JSON candidate: its span in the reply, its text, and its value or why it does not parse."""

    start: int
    end: int
    body: str
    value: Any = None
    error: str | None = None  # None: `value` holds the parsed JSON


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


def _parse(start: int, end: int, body: str) -> Found:
    try:
        return Found(start, end, body, json.loads(body))
    except json.JSONDecodeError as e:
        return Found(start, end, body, error=f"not JSON: {e.msg} (line {e.lineno})")


def find_json(text: str) -> list[Found]:
    """Every JSON candidate of `text` under the module's one rule, in text order, parsed or broken.

    >>> [(f.value, f.error) for f in find_json('{"a": {"b": "}"}} then ```json\\n{"c": 1,}\\n```')]
    [({'a': {'b': '}'}}, None), (None, 'not JSON: Expecting property name enclosed in double quotes (line 1)')]
    """
    found, masked = [], list(text)
    for m in _FENCE.finditer(text):
        masked[m.start():m.end()] = " " * (m.end() - m.start())
        lang, body = (m.group(1) or "").lower(), m.group(2)
        if lang == "json" or (not lang and body.lstrip().startswith(("{", "["))):
            found.append(_parse(m.start(), m.end(), body))
    rest, pos = "".join(masked), 0
    while (m := _BARE.search(rest, pos)) is not None:
        end = _balanced_end(rest, m.start()) or len(rest)
        found.append(_parse(m.start(), end, rest[m.start():end]))
        pos = end
    return sorted(found, key=lambda f: f.start)


def extract_json(text: str) -> list[Any]:
    """The parsed JSON values of `text` (broken candidates left out), in text order.

    >>> extract_json('Offer: {"amount": 5, "note": "a } brace"} and {broken} and ```JSON\\n[1]\\n```')
    [{'amount': 5, 'note': 'a } brace'}, [1]]
    """
    return [f.value for f in find_json(text) if f.error is None]


def schema_validator(schema: dict) -> Draft202012Validator:
    """A validator for a Draft 2020-12 JSON Schema; a bad schema raises ValueError naming the problem."""
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as e:
        raise ValueError(f"invalid JSON Schema: {e.message}. Fix the schema (Draft 2020-12)") from None
    return Draft202012Validator(schema)


def json_verdict(text: str, validator: Draft202012Validator) -> tuple[str, dict]:
    """("valid" | "no_json" | "invalid", details); details of "invalid" name the first failing candidate
    (`block`, its index), the `error`, and for a schema error `at`, the path in the value ("(root)": the value).

    >>> json_verdict('{"a": "x"}', Draft202012Validator({"properties": {"a": {"type": "number"}}}))
    ('invalid', {'block': 0, 'error': "'x' is not of type 'number'", 'at': 'a'})
    """
    found = find_json(text)
    for k, f in enumerate(found):
        if f.error is not None:
            return "invalid", {"block": k, "error": f.error}
        error = best_match(validator.iter_errors(f.value))
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "(root)"
            return "invalid", {"block": k, "error": error.message, "at": where}
    return ("valid" if found else "no_json"), {}


def schema_valid(text: str, schema: dict) -> tuple[bool, str | None]:
    """(True, None) if `text` is schema-valid (module rule); else (False, "no_json" | "invalid_json" | error)."""
    verdict, d = json_verdict(text, schema_validator(schema))
    if verdict != "invalid" or "at" not in d:
        return verdict == "valid", {"valid": None, "no_json": "no_json"}.get(verdict, "invalid_json")
    return False, d["error"] if d["at"] == "(root)" else f"{d['at']}: {d['error']}"


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


def same_value(got: Any, want: Any, tolerance: float) -> bool:
    """Equality for a JSON field: numbers within `tolerance`, strings ignoring outer whitespace, else same type and ==.

    >>> same_value(12.499, 12.5, 0.005), same_value("full ", "full", 0), same_value(True, 1, 0)
    (True, True, False)
    """
    if _number(want):
        return _number(got) and abs(got - want) <= tolerance
    if isinstance(want, str):
        return isinstance(got, str) and got.strip() == want.strip()
    return type(got) is type(want) and got == want


def field_correctness(text: str, expected: dict, *, tolerance: float = 0.005) -> dict[str, bool]:
    """Per expected field: does the first parsed JSON object carry that value (`same_value`)?

    >>> field_correctness('{"amount": 12.5, "type": "full"}', {"amount": 12.499, "type": "partial"})
    {'amount': True, 'type': False}
    """
    obj = next((v for v in extract_json(text) if isinstance(v, dict)), None)
    return {key: obj is not None and key in obj and same_value(obj[key], want, tolerance)
            for key, want in expected.items()}


def lookup(fields: dict[str, Any], path: str) -> Any:
    """The value at a dotted path in nested dicts, or None when any step is missing.

    >>> lookup({"facts": {"refund": {"amount": 12.5}}}, "facts.refund.amount"), lookup({"facts": {}}, "facts.x")
    (12.5, None)
    """
    value: Any = fields
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value
