"""policy: drop records whose replies break a written policy (rules, a JSON Schema, facts).

Each reply of the configured roles (default: assistant) is checked in order; the first failure drops the record:
1. `policy_violation`: a rule of the rules file (the format of `sftpipe.evaluate.checks`: must_contain /
   must_not_contain, optionally per category) is broken; the record's category is the value at `category_field`
   (a dotted path into the record's fields). Details: the rule ids and descriptions.
2. `schema_invalid`: a ```json block does not parse, or does not validate against `json_schema`. Details: the
   error and where it is.
3. `fact_mismatch`: in the first JSON object of a reply's ```json blocks, a field of `expected_fields` differs
   from the record's own value at the mapped dotted path (numbers within `tolerance`), e.g.
   `{amount: facts.refund_amount}`. Fields whose expected value is missing or null are not checked, and a reply
   without a JSON block has nothing to check (a required block is a rule: must_contain "```json").
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, best_match

from ..conversation import Conversation
from ..errors import ConfigError
from ..evaluate.checks import Rule, load_rules, violations
from .base import Drop, Outcome, RecordStage
from .config import PolicyConfig

_JSON_BLOCK = re.compile(r"```json[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)
_MISSING = object()


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


def json_blocks(text: str) -> list[str]:
    """The bodies of the ```json fenced blocks in `text`.

    >>> json_blocks('Done.\\n```json\\n{"a": 1}\\n```')
    ['{"a": 1}\\n']
    """
    return _JSON_BLOCK.findall(text)


def same_value(got: Any, want: Any, tolerance: float) -> bool:
    """Equality for a JSON field: numbers within `tolerance`, strings ignoring outer whitespace, else ==.

    >>> same_value(12.499, 12.5, 0.005), same_value("full ", "full", 0), same_value(True, 1, 0)
    (True, True, False)
    """
    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    if number(want):
        return number(got) and abs(got - want) <= tolerance
    if isinstance(want, str):
        return isinstance(got, str) and got.strip() == want.strip()
    return type(got) is type(want) and got == want


def _read_schema(path: str) -> dict:
    try:
        schema = json.loads(Path(path).read_text(encoding="utf-8"))
        Draft202012Validator.check_schema(schema)
    except FileNotFoundError:
        raise ConfigError("curate.policy.json_schema", [f"{path}: file not found; fix: give a JSON Schema file"]) \
            from None
    except (json.JSONDecodeError, SchemaError) as e:
        raise ConfigError("curate.policy.json_schema", [f"{path}: not a valid JSON Schema ({e}); fix the file"]) \
            from None
    return schema


class Policy(RecordStage):
    """The configured rules, JSON Schema and facts checks, applied to every reply of the configured roles."""

    name = "policy"

    def __init__(self, cfg: PolicyConfig, strict: bool = False):
        super().__init__(strict)
        self.cfg = cfg
        self.rules: list[Rule] = []
        if cfg.rules:
            if not Path(cfg.rules).is_file():
                raise ConfigError("curate.policy.rules", [f"{cfg.rules}: file not found; fix: give a rules YAML "
                                                          "file (format: sftpipe.evaluate.checks)"])
            self.rules = load_rules(cfg.rules)
        self.schema = _read_schema(cfg.json_schema) if cfg.json_schema else None
        self._validator: Draft202012Validator | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_validator": None}  # rebuilt in each worker

    def validator(self) -> Draft202012Validator:
        if self._validator is None:
            self._validator = Draft202012Validator(self.schema)
        return self._validator

    def process(self, conv: Conversation) -> Outcome:
        category = lookup(conv.meta, self.cfg.category_field)
        category = "" if category is None else str(category)
        for i, m in enumerate(conv.messages):
            if m.role in self.cfg.roles and m.content:
                found = self.check(m.content, category, conv.meta)
                if found:
                    reason, details = found
                    return Drop(conv, self.name, reason, {"index": i, **details}), {reason: 1}
        return conv, None

    def check(self, text: str, category: str, fields: dict[str, Any]) -> tuple[str, dict] | None:
        """(reason, details) for the first check that `text` fails, or None."""
        broken = violations(text, category, self.rules) if self.rules else []
        if broken:
            described = {r.id: r.description for r in self.rules if r.id in broken}
            return "policy_violation", {"rules": broken, "descriptions": described, "category": category}
        blocks = json_blocks(text) if self.schema is not None or self.cfg.expected_fields else []
        values = []
        for k, block in enumerate(blocks):
            try:
                values.append(json.loads(block))
            except json.JSONDecodeError as e:
                if self.schema is not None:
                    return "schema_invalid", {"block": k, "error": f"not JSON: {e.msg} (line {e.lineno})"}
                continue
            if self.schema is not None:
                error = best_match(self.validator().iter_errors(values[-1]))
                if error is not None:
                    where = "/".join(str(p) for p in error.absolute_path) or "(root)"
                    return "schema_invalid", {"block": k, "error": error.message, "at": where}
        obj = next((v for v in values if isinstance(v, dict)), None)
        if obj is None:
            return None
        for key, path in self.cfg.expected_fields.items():
            want = lookup(fields, path)
            got = obj.get(key, _MISSING)
            if want is not None and (got is _MISSING or not same_value(got, want, self.cfg.tolerance)):
                return "fact_mismatch", {"field": key, "expected": want, "expected_from": path,
                                         "found": None if got is _MISSING else got}
        return None
