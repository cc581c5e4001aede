"""sftpipe.checks: the one JSON rule (a shared table of replies on which curate's policy stage and eval's checks
must give the same verdict), schema validity, the rules file, field correctness and dotted lookups."""

from __future__ import annotations

import doctest
import json
import textwrap

import pytest

from sftpipe import checks
from sftpipe.checks import (
    Rule,
    extract_json,
    field_correctness,
    find_json,
    load_rules,
    lookup,
    same_value,
    schema_valid,
    violations,
)
from sftpipe.conversation import Message
from sftpipe.config.curate import PolicyConfig
from sftpipe.curate.policy import Policy
from sftpipe.errors import ConfigError
from sftpipe.evaluate.items import EvalItem
from sftpipe.evaluate.score import check_reply

REFUND_SCHEMA = {
    "type": "object",
    "required": ["order_id", "amount", "currency", "type"],
    "properties": {
        "order_id": {"type": "string", "pattern": "^ORD-[0-9]+$"},
        "amount": {"type": "number", "minimum": 0},
        "currency": {"type": "string"},
        "type": {"enum": ["full", "partial"]},
    },
    "additionalProperties": False,
}
GOOD_OFFER = '{"order_id": "ORD-123", "amount": 19.99, "currency": "EUR", "type": "partial"}'


def test_extract_json_fenced_and_bare_in_text_order():
    text = 'Before {"n": 1} then\n```json\n{"n": 2}\n```\nand ```JSON\n[1, 2]\n``` and {"n": 3}'
    assert extract_json(text) == [{"n": 1}, {"n": 2}, [1, 2], {"n": 3}]


def test_extract_json_handles_braces_and_escapes_inside_strings():
    text = r'Reply: {"msg": "use {curly} and \"quoted }\" text", "x": {"y": [1, {"z": 2}]}} done'
    assert extract_json(text) == [{"msg": 'use {curly} and "quoted }" text', "x": {"y": [1, {"z": 2}]}}]


def test_extract_json_skips_invalid_and_finds_valid_inner_object():
    assert extract_json('{not json, {"ok": true} still broken}') == [{"ok": True}]
    assert extract_json("{'single': 'quotes'} {unbalanced") == []
    assert extract_json("```json\n{bad}\n```") == []


def test_extract_json_ignores_non_json_fences():
    text = '```python\nd = {"a": 1}\n```\nand then {"b": 2}'
    assert extract_json(text) == [{"b": 2}]


def test_find_json_spans_cover_whole_fences_and_cut_off_replies():
    text = 'A ```json\n{"a": 1}\n``` B {"b": 2} C ```\n{"c": '
    found = find_json(text)
    assert [text[f.start:f.end] for f in found] == ['```json\n{"a": 1}\n```', '{"b": 2}', '```\n{"c": ']
    assert [f.error is None for f in found] == [True, True, False] and found[2].error.startswith("not JSON")


def test_schema_valid_needs_every_json_value_valid():
    assert schema_valid(f"Here is your offer:\n```json\n{GOOD_OFFER}\n```", REFUND_SCHEMA) == (True, None)
    # one rule for curate and eval: an extra object that fails the schema makes the reply invalid, in any order
    assert schema_valid('{"note": "hi"} then ' + GOOD_OFFER, REFUND_SCHEMA)[0] is False
    assert schema_valid(GOOD_OFFER + ' then {"note": "hi"}', REFUND_SCHEMA)[0] is False
    assert schema_valid(GOOD_OFFER + " and " + GOOD_OFFER, REFUND_SCHEMA) == (True, None)


@pytest.mark.parametrize("text,reason", [
    ("We will refund you soon.", "no_json"),
    ('```json\n{"amount": 5,}\n```', "invalid_json"),
    ('Offer: {"amount": 5,}', "invalid_json"),
    ("{amount: 5}", "no_json"),  # unquoted keys are prose braces, not JSON (the rule: `{` then `"` or `}`)
])
def test_schema_valid_reasons(text, reason):
    assert schema_valid(text, REFUND_SCHEMA) == (False, reason)


def test_schema_valid_reports_validation_message():
    ok, reason = schema_valid(GOOD_OFFER.replace('"partial"', '"instant"'), REFUND_SCHEMA)
    assert not ok and reason.startswith("type:") and "instant" in reason
    ok, reason = schema_valid('{"order_id": "ORD-1", "amount": 5, "currency": "EUR"}', REFUND_SCHEMA)
    assert not ok and "'type' is a required property" in reason


def test_schema_valid_rejects_bad_schema():
    with pytest.raises(ValueError, match="invalid JSON Schema"):
        schema_valid(GOOD_OFFER, {"type": "no-such-type"})


RULES_YAML = """
rules:
  - id: no_instant_refund
    description: never promise an instant refund
    must_not_contain: ["instant refund", "refunded immediately", "refund right away"]
  - id: fraud_warning
    categories: [account_lockout, chargeback, fraud_suspicion]
    regex: true
    must_contain: ["(?i)never share (your )?(password|card|one-time code)"]
  - id: order_id
    must_contain: ["order id", "order number"]
"""


@pytest.fixture
def rules(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text(RULES_YAML)
    return load_rules(path)


def test_load_rules_reads_all_fields(rules):
    assert [r.id for r in rules] == ["no_instant_refund", "fraud_warning", "order_id"]
    assert rules[0].categories is None and rules[0].description == "never promise an instant refund"
    assert rules[1].regex and rules[1].categories == ["account_lockout", "chargeback", "fraud_suspicion"]


@pytest.mark.parametrize("category,text,expected", [
    ("refund", "Your order ID ORD-1 will be refunded in 5 days.", []),
    ("refund", "Your ORDER NUMBER is noted; you'll get an INSTANT REFUND.", ["no_instant_refund"]),
    ("refund", "You will get your money back.", ["order_id"]),
    ("chargeback", "About order ORD-9 (order id noted): please never share your card number.", []),
    ("chargeback", "About order id ORD-9: we are looking into it.", ["fraud_warning"]),
    ("account_lockout", "Never share your password. I have unlocked it.", ["order_id"]),
    # regex is used as written: without (?i) in the pattern this casing would not match
    ("fraud_suspicion", "NEVER SHARE YOUR ONE-TIME CODE. Order number?", []),
])
def test_violations(rules, category, text, expected):
    assert violations(text, category, rules) == expected


def test_must_contain_is_any_of():
    rule = Rule("greet", None, ["hello", "hi there"], [])
    assert violations("Hi there!", "x", [rule]) == []
    assert violations("Good morning", "x", [rule]) == ["greet"]


def test_regex_rules_are_case_sensitive_unless_flagged():
    rule = Rule("sig", None, ["Harbor Support$"], [], regex=True)
    assert violations("Thanks,\nHarbor Support", "x", [rule]) == []
    assert violations("Thanks,\nharbor support", "x", [rule]) == ["sig"]


def _load_error(tmp_path, text) -> str:
    path = tmp_path / "bad.yaml"
    path.write_text(textwrap.dedent(text))
    with pytest.raises(ConfigError) as info:
        load_rules(path)
    return str(info.value)


def test_load_rules_errors_name_rule_and_field_all_at_once(tmp_path):
    msg = _load_error(tmp_path, """
        rules:
          - id: typo_rule
            must_contian: ["x"]
          - id: bad_cats
            categories: refund
            must_contain: ["y"]
    """)
    assert "2 problems" in msg
    assert "rule 'typo_rule', field 'must_contian'" in msg
    assert "rule 'bad_cats', field 'categories'" in msg


@pytest.mark.parametrize("text,needle", [
    ("rules:\n  - id: r1\n    regex: true\n    must_contain: ['(unclosed']\n",
     "rule 'r1', field 'must_contain': invalid regex"),
    ("rules:\n  - id: r1\n    description: nothing to check\n", "rule 'r1': needs must_contain or must_not_contain"),
    ("rules:\n  - id: r1\n    must_contain: [a]\n  - id: r1\n    must_contain: [b]\n",
     "rule 'r1', field 'id': duplicate"),
    ("rules:\n  - description: no id\n    must_contain: [a]\n", "rule '#0', field 'id'"),
    ("- id: r1\n", "expected a mapping with a 'rules' list"),
])
def test_load_rules_single_errors(tmp_path, text, needle):
    assert needle in _load_error(tmp_path, text)


def test_field_correctness():
    text = f"Offer below.\n```json\n{GOOD_OFFER}\n```\n"
    expected = {"order_id": "ORD-123", "amount": 19.994, "type": "partial", "currency": "USD"}
    assert field_correctness(text, expected) == {"order_id": True, "amount": True, "type": True, "currency": False}
    assert field_correctness(text, {"amount": 20.0}) == {"amount": False}
    assert field_correctness(text, {"amount": 20.0}, tolerance=0.02) == {"amount": True}


def test_field_correctness_missing_wrong_type_and_no_json():
    assert field_correctness('{"amount": "19.99"}', {"amount": 19.99, "eta_days": 5}) == {
        "amount": False, "eta_days": False}
    assert field_correctness('{"amount": true}', {"amount": 1}) == {"amount": False}
    assert field_correctness("no json here", {"amount": 1}) == {"amount": False}
    # only the first object counts
    assert field_correctness('{"amount": 1} {"amount": 2}', {"amount": 2}) == {"amount": False}


def test_same_value_and_lookup():
    assert same_value(5, 5.004, 0.005) and not same_value("5", 5, 0.005) and not same_value(None, False, 0)
    assert lookup({"a": {"b": {"c": 0}}}, "a.b.c") == 0
    assert lookup({"a": [1]}, "a.b") is None


def test_doctests():
    result = doctest.testmod(checks)
    assert result.failed == 0 and result.attempted > 0


# --- One verdict per reply, shared by curate (Policy.check with a json_schema) and eval (check_reply) ---------

TABLE_SCHEMA = {"type": "object", "required": ["amount", "currency"], "additionalProperties": False,
                "properties": {"amount": {"type": "number"}, "currency": {"enum": ["USD", "EUR"]},
                               "note": {"type": "string"}}}
OK = '{"amount": 5, "currency": "USD"}'
VERDICTS = [  # (name, reply, the one expected verdict: valid | invalid | no_json)
    ("fenced json", f"Here you go.\n```json\n{OK}\n```", "valid"),
    ("fenced JSON uppercase", f"```JSON\n{OK}\n```", "valid"),
    ("fence without language", f"```\n{OK}\n```", "valid"),
    ("fence on one line", f"```json {OK}```", "valid"),
    ("bare json", OK, "valid"),
    ("json inside prose", f'Your refund {OK} is on its way.', "valid"),
    ("braces inside strings", 'Done: {"amount": 5, "currency": "USD", "note": "a } and { inside"} ok', "valid"),
    ("escaped quote and brace", r'{"amount": 5, "currency": "USD", "note": "say \"}\" now"}', "valid"),
    ("two valid objects", f'{OK} or {{"amount": 6, "currency": "EUR"}}', "valid"),
    ("python fence then bare json", f'```python\nx = {{"a": 1}}\n```\n{OK}', "valid"),
    ("valid object inside non-json braces", f"{{not json, {OK} still}}", "valid"),
    ("no json", "We will refund you within 5 days.", "no_json"),
    ("prose braces", "Replace {name} with your name and {order} with the order.", "no_json"),
    ("python dict in prose", "{'amount': 5, 'currency': 'USD'}", "no_json"),
    ("latex", r"The ratio is \frac{a}{b} = 2.", "no_json"),
    ("bare array", "Totals: [1, 2, 3] and [4].", "no_json"),
    ("python fence only", '```python\nd = {"amount": 5}\n```', "no_json"),
    ("plain fence of text", "```\nrefund --order 7\n```", "no_json"),
    ("broken fenced json", '```json\n{"amount": 5, "currency": "USD",}\n```', "invalid"),
    ("single quotes in a json fence", "```json\n{'amount': 5, 'currency': 'USD'}\n```", "invalid"),
    ("broken bare json", 'Offer: {"amount": 5, "currency": "USD",} done.', "invalid"),
    ("unterminated fence", 'Your refund:\n```json\n{"amount": 5, "curr', "invalid"),
    ("unterminated bare object", 'Refund {"amount": 5, "currency": ', "invalid"),
    ("empty json fence", "```json\n```", "invalid"),
    ("schema error", '```json\n{"amount": "5", "currency": "USD"}\n```', "invalid"),
    ("array in a json fence", f"```json\n[{OK}]\n```", "invalid"),
    ("two objects in one fence", f"```json\n{OK}\n{OK}\n```", "invalid"),
    ("valid then schema-invalid", f'```json\n{OK}\n```\nAlso {{"note": "hi"}}', "invalid"),
    ("schema-invalid then valid", f'{{"note": "hi"}} then {OK}', "invalid"),
    ("broken fence then valid bare", f'```json\n{{"amount": 5,,}}\n```\n{OK}', "invalid"),
    ("empty bare object", "Result: {}", "invalid"),
]


@pytest.fixture(scope="module")
def curate_stage(tmp_path_factory) -> Policy:
    path = tmp_path_factory.mktemp("schema") / "schema.json"
    path.write_text(json.dumps(TABLE_SCHEMA), encoding="utf-8")
    # the probe field makes every parsed object a fact_mismatch, so "kept" splits into valid vs no JSON
    return Policy(PolicyConfig(enabled=True, json_schema=str(path), expected_fields={"amount": "probe"}))


def curate_verdict(stage: Policy, text: str) -> str:
    found = stage.check(text, "", {"probe": "never a number"})
    return {"schema_invalid": "invalid", "fact_mismatch": "valid", None: "no_json"}[found and found[0]]


def eval_verdict(text: str) -> str:
    item = EvalItem("t", "s", "refund", [Message("user", "q")], None, schema=TABLE_SCHEMA)
    row = check_reply(text, item, None)
    assert (row["schema_valid"], row["schema_error"]) == schema_valid(text, TABLE_SCHEMA)
    return "valid" if row["schema_valid"] else "no_json" if row["schema_error"] == "no_json" else "invalid"


def test_the_table_covers_every_verdict():
    assert len(VERDICTS) >= 20 and len({name for name, _, _ in VERDICTS}) == len(VERDICTS)
    assert {v for _, _, v in VERDICTS} == {"valid", "invalid", "no_json"}


@pytest.mark.parametrize("text,verdict", [(t, v) for _, t, v in VERDICTS], ids=[n for n, _, _ in VERDICTS])
def test_curate_and_eval_give_the_same_verdict(curate_stage, text, verdict):
    assert (curate_verdict(curate_stage, text), eval_verdict(text)) == (verdict, verdict)
