"""policy stage: each reason (policy_violation, schema_invalid, fact_mismatch) fires on its record, names the
evidence, and leaves compliant records alone; config and file errors are reported up front."""

from __future__ import annotations

import json

import pytest

from sftpipe.conversation import Conversation, Message
from sftpipe.curate.base import Drop
from sftpipe.config.curate import CurateConfig, PolicyConfig
from sftpipe.curate.policy import Policy
from sftpipe.errors import ConfigError

RULES = """
rules:
  - id: no_instant_refund
    description: never promise an instant refund
    must_not_contain: ["instant refund", "refunded immediately"]
  - id: fraud_warning
    description: the fraud warning is mandatory on payment issues
    categories: [refund]
    must_contain: ["Never share your password"]
"""
SCHEMA = {"type": "object", "required": ["amount", "currency"], "additionalProperties": False,
          "properties": {"amount": {"type": "number"}, "currency": {"enum": ["USD", "EUR"]}}}
WARN = "Never share your password."


def offer(amount, currency="USD", raw=None) -> str:
    body = raw if raw is not None else json.dumps({"amount": amount, "currency": currency})
    return f"Your refund is on its way. {WARN}\n\n```json\n{body}\n```\n\nIt takes 5 days."


def conv(reply: str, category: str = "refund", amount: float | None = 20.0, user: str = "Refund order 7, please."):
    meta = {"id": "r1", "category": category, "facts": {"refund_amount": amount, "currency": "USD"}}
    return Conversation([Message("user", user), Message("assistant", reply)], meta)


@pytest.fixture()
def stage(tmp_path) -> Policy:
    (tmp_path / "rules.yaml").write_text(RULES)
    (tmp_path / "schema.json").write_text(json.dumps(SCHEMA))
    return Policy(PolicyConfig(enabled=True, rules=str(tmp_path / "rules.yaml"),
                               json_schema=str(tmp_path / "schema.json"),
                               expected_fields={"amount": "facts.refund_amount", "currency": "facts.currency"}))


def test_compliant_reply_is_kept(stage):
    out, _ = stage.process(conv(offer(20.0)))
    assert not isinstance(out, Drop)


def test_policy_violation_names_the_rule(stage):
    out, _ = stage.process(conv(offer(20.0).replace("on its way", "an instant refund")))
    assert out.reason == "policy_violation" and out.details["rules"] == ["no_instant_refund"]
    assert out.details["descriptions"] == {"no_instant_refund": "never promise an instant refund"}
    assert out.details["index"] == 1


def test_category_rules_follow_the_category_field(stage):
    no_warning = offer(20.0).replace(WARN, "")
    assert stage.process(conv(no_warning))[0].details["rules"] == ["fraud_warning"]
    assert not isinstance(stage.process(conv(no_warning, category="order_status"))[0], Drop)


@pytest.mark.parametrize("raw, what", [
    ("{'amount': 20.0, 'currency': 'USD'}", "not JSON"),
    ('{"amount": 20.0, "currency": "USD",}', "not JSON"),
    ('{"amount": "20.0", "currency": "USD"}', "is not of type 'number'"),
    ('{"amount": 20.0, "currency": "USD", "approved_by": "agent"}', "Additional properties"),
])
def test_schema_invalid_names_the_error(stage, raw, what):
    out, _ = stage.process(conv(offer(None, raw=raw)))
    assert out.reason == "schema_invalid" and what in out.details["error"], out.details


def test_fact_mismatch_names_field_expected_and_found(stage):
    out, _ = stage.process(conv(offer(40.0)))
    assert out.reason == "fact_mismatch"
    assert out.details == {"index": 1, "field": "amount", "expected": 20.0, "expected_from": "facts.refund_amount",
                           "found": 40.0}
    assert not isinstance(stage.process(conv(offer(20.004)))[0], Drop)  # within the tolerance


def test_missing_fact_or_missing_json_is_not_checked(stage):
    assert not isinstance(stage.process(conv(offer(40.0), amount=None))[0], Drop)
    assert not isinstance(stage.process(conv(f"Your order ships today. {WARN}"))[0], Drop)


def test_only_configured_roles_are_checked(stage):
    c = conv(offer(20.0), category="order_status", user="Can I get an instant refund?")
    assert not isinstance(stage.process(c)[0], Drop)
    stage.cfg = stage.cfg.model_copy(update={"roles": ["user", "assistant"]})
    assert stage.process(c)[0].details == {"index": 0, "rules": ["no_instant_refund"],
                                           "descriptions": {"no_instant_refund": "never promise an instant refund"},
                                           "category": "order_status"}


def test_json_is_found_by_the_eval_rule_not_only_in_json_fences(stage):
    # curate used to read only ```json blocks; it now uses sftpipe.checks' one rule, as eval does
    bare = f"Your refund is on its way. {WARN} Offer: " + '{"amount": "20.0", "currency": "USD"}'
    assert stage.process(conv(bare))[0].details == {"index": 1, "block": 0, "error": "'20.0' is not of type 'number'",
                                                    "at": "amount"}
    assert stage.process(conv(offer(40.0).replace("```json", "```")))[0].reason == "fact_mismatch"
    cut = f"Your refund is on its way. {WARN}\n\n```json\n" + '{"amount": 20.0, "cur'  # a cut-off reply
    out = stage.process(conv(cut))[0]
    assert out.reason == "schema_invalid" and "not JSON" in out.details["error"]
    extra = offer(20.0) + ' Reference: {"ticket": 7}'  # every JSON value must validate
    assert stage.process(conv(extra))[0].details == {"index": 1, "block": 1, "error": "'amount' is a required property",
                                                     "at": "(root)"}


def test_broken_json_without_a_schema_is_not_a_fact_mismatch(tmp_path):
    stage = Policy(PolicyConfig(enabled=True, expected_fields={"amount": "facts.refund_amount"}))
    assert not isinstance(stage.process(conv(offer(None, raw="{'amount': 99}")))[0], Drop)
    assert stage.process(conv(offer(99.0)))[0].reason == "fact_mismatch"


def test_config_and_file_errors_come_first(tmp_path):
    with pytest.raises(ValueError, match="checks nothing"):
        CurateConfig.model_validate({"policy": {"enabled": True}})
    with pytest.raises(ConfigError, match="file not found"):
        Policy(PolicyConfig(enabled=True, rules=str(tmp_path / "none.yaml")))
    (tmp_path / "bad.json").write_text('{"type": 12}')
    with pytest.raises(ConfigError, match="not a valid JSON Schema"):
        Policy(PolicyConfig(enabled=True, json_schema=str(tmp_path / "bad.json")))

