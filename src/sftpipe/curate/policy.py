"""policy: drop records whose replies break a written policy (rules, a JSON Schema, facts).

Each reply of the configured roles (default: assistant) is checked in order; the first failure drops the record:
1. `policy_violation`: a rule of the rules file (the format of `sftpipe.checks`: must_contain / must_not_contain,
   optionally per category) is broken; the record's category is the value at `category_field` (a dotted path
   into the record's fields). Details: the rule ids and descriptions.
2. `schema_invalid`: the reply's JSON (found by the one rule of `sftpipe.checks`, the same as `sftpipe eval`:
   ```json or plain ``` fences and bare `{"...` objects) holds a candidate that does not parse or does not
   validate against `json_schema`. Details: the candidate's index (`block`), the error and where it is.
3. `fact_mismatch`: in the reply's first parsed JSON object, a field of `expected_fields` differs from the
   record's own value at the mapped dotted path (numbers within `tolerance`), e.g. `{amount: facts.refund_amount}`.
   Fields whose expected value is missing or null are not checked, and a reply without JSON has nothing to check
   (a required block is a rule: must_contain "```json"). Without a schema, broken JSON is skipped here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from ..checks import Rule, extract_json, json_verdict, load_rules, lookup, same_value, violations
from ..conversation import Conversation
from ..errors import ConfigError
from .base import Drop, Outcome, RecordStage
from ..config.curate import PolicyConfig

_MISSING = object()


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
                                                          "file (format: sftpipe.checks)"])
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
        if self.schema is not None:
            verdict, details = json_verdict(text, self.validator())
            if verdict == "invalid":
                return "schema_invalid", details
        if not self.cfg.expected_fields:
            return None
        obj = next((v for v in extract_json(text) if isinstance(v, dict)), None)
        if obj is None:
            return None
        for key, path in self.cfg.expected_fields.items():
            want = lookup(fields, path)
            got = obj.get(key, _MISSING)
            if want is not None and (got is _MISSING or not same_value(got, want, self.cfg.tolerance)):
                return "fact_mismatch", {"field": key, "expected": want, "expected_from": path,
                                         "found": None if got is _MISSING else got}
        return None
