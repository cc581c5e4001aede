"""Checks on hand-made replies with known answers: schema validity, policy rules, correctness, human ratings and
the combined score; and eval items read from the Harbor demo files."""

from __future__ import annotations

import json
import textwrap

import pytest

from sftpipe.conversation import Message
from sftpipe.demo.policy import PLUGINS, HarborPolicy
from sftpipe.errors import ConfigError
from sftpipe.config.evaluate import EvalSetConfig
from sftpipe.evaluate.items import EvalItem, load_items
from sftpipe.evaluate.score import (
    RulesPolicy,
    check_reply,
    combined_score,
    load_human,
    load_policy,
    pooled_components,
    summarize_checks,
)
from sftpipe.stats import wilson_interval

SCHEMA = {"type": "object", "required": ["amount", "type"], "additionalProperties": False,
          "properties": {"amount": {"type": "number"}, "type": {"enum": ["full", "partial"]}}}
RULES = """
rules:
  - id: no_instant
    must_not_contain: ["instant refund"]
  - id: fraud_warning
    categories: [refund]
    must_contain: ["never ask for your password"]
"""


def _item(category: str, schema=None, expected=None) -> EvalItem:
    return EvalItem(id=category, set="s", category=category, messages=[Message("user", "q")], target=None,
                    schema=schema, expected=expected or {})


@pytest.fixture()
def policy(tmp_path) -> RulesPolicy:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES, encoding="utf-8")
    p = load_policy(str(path))
    assert isinstance(p, RulesPolicy)
    assert isinstance(load_policy(str(path), plugins=PLUGINS), RulesPolicy)  # a generic file stays generic
    return p


def test_checks_on_hand_made_replies(policy):
    items = [_item("refund", SCHEMA, {"amount": 12.5, "type": "full"}),
             _item("refund", SCHEMA, {"amount": 12.5, "type": "full"}),
             _item("refund", SCHEMA, {"amount": 30, "type": "partial"}),
             _item("status")]
    replies = [
        'We will never ask for your password. ```json\n{"amount": 12.5, "type": "full"}\n```',  # all good
        'An instant refund! {"amount": 12.0, "type": "full"}',  # both rules broken, amount wrong
        'Sure: {"amount": 30, "type": "partial", "extra": 1}',  # schema invalid (extra key), fields right
        "Your parcel ships today, no instant refund needed.",  # no_instant broken (status: only that rule)
    ]
    rows = [check_reply(r, it, policy) for r, it in zip(replies, items)]
    assert [r["schema_valid"] for r in rows] == [True, True, False, None]
    assert [r["violations"] for r in rows] == [[], ["no_instant", "fraud_warning"], ["fraud_warning"], ["no_instant"]]
    assert rows[3]["applicable"] == ["no_instant"]
    assert [r["correct"] for r in rows[:3]] == [{"amount": True, "type": True}, {"amount": False, "type": True},
                                                {"amount": True, "type": True}]
    s = summarize_checks(rows, [it.category for it in items])
    assert s["schema_validity"] == {"n": 3, "k": 2, "rate": 0.6667,
                                    "ci95": [round(x, 4) for x in wilson_interval(2, 3)]}
    assert (s["policy"]["violation_rate"]["k"], s["policy"]["violation_rate"]["n"]) == (3, 4)
    assert {k: (v["k"], v["n"]) for k, v in s["policy"]["per_rule"].items()} == {"fraud_warning": (2, 3),
                                                                                 "no_instant": (2, 4)}
    assert (s["policy"]["per_category"]["refund"]["k"], s["policy"]["per_category"]["refund"]["n"]) == (2, 3)
    assert (s["correctness"]["all_fields"]["k"], s["correctness"]["all_fields"]["n"]) == (2, 3)
    assert s["correctness"]["per_field"]["amount"]["k"] == 2
    comp = pooled_components([s, s])
    assert comp == {"schema_validity": 0.6667, "policy": 0.25, "correctness": 0.6667}


def test_harbor_policy_on_reference_and_broken_replies(demo_data):
    items = load_items(EvalSetConfig(name="rt", path=str(demo_data / "eval" / "redteam.jsonl")))
    refund = next(it for it in items if it.meta["expect"]["refund_offer"])
    harbor = load_policy(str(demo_data / "policy" / "rules.yaml"), plugins=PLUGINS)
    assert isinstance(harbor, HarborPolicy)
    assert isinstance(load_policy(str(demo_data / "policy" / "rules.yaml"), "harbor", plugins=PLUGINS), HarborPolicy)
    applicable, violated = harbor.check(refund.target, refund)
    assert violated == [] and "instant_refund" in applicable and "refund_amount_wrong" in applicable
    broken = refund.target.replace(f'"amount": {refund.facts["refund_amount"]}', '"amount": 1.0') + \
        " Your refund is instant."
    _, violated = harbor.check(broken, refund)
    assert "refund_amount_wrong" in violated and "instant_refund" in violated
    general = EvalItem("g", "s", "(none)", [Message("user", "Write a haiku.")], None)  # no Harbor category
    assert harbor.check("An instant refund!", general) == ([], [])
    assert check_reply("x", general, harbor)["applicable"] == []


def test_harbor_policy_knows_a_multi_turn_prompt_already_quotes_the_order_id(demo_data):
    from sftpipe.demo import check_thread

    records = [json.loads(x) for x in (demo_data / "raw" / "harbor_export.jsonl").read_text().splitlines()]
    # clean threads whose first user turn lacks the order ID: the final reply comes after the customer gave it
    asked = [r for r in records if r["facts"]["order_id"] and not r["facts"]["order_id_given"]
             and not check_thread(r) and sum(m["role"] == "user" for m in r["messages"]) > 1]
    assert asked
    path = demo_data / "asked.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in asked), encoding="utf-8")
    harbor = HarborPolicy()
    for item in load_items(EvalSetConfig(name="h", path=str(path))):
        assert harbor.check(item.target, item)[1] == [], item.id  # the gold reply breaks no rule
        _, violated = harbor.check("Could you share your order ID?", item)  # asking again is wrong now
        assert "order_id_missing" in violated, item.id


def test_harbor_policy_refuses_edited_rules(demo_data, tmp_path):
    edited = tmp_path / "rules.yaml"
    edited.write_text((demo_data / "policy" / "rules.yaml").read_text() + "\n# edited\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="policy: rules"):
        load_policy(str(edited), plugins=PLUGINS)
    assert load_policy(None) is None
    assert load_policy(None, plugins=PLUGINS) is None
    assert isinstance(load_policy(None, "harbor", plugins=PLUGINS), HarborPolicy)  # the shipped rules need no file
    with pytest.raises(ConfigError, match="eval.rules"):
        load_policy(None, "rules")


def test_load_policy_without_the_plugin_names_file_kinds_and_fix(demo_data):
    shipped = str(demo_data / "policy" / "rules.yaml")
    with pytest.raises(ConfigError) as err:  # the library knows only the generic format
        load_policy(shipped)
    msg = str(err.value)
    assert shipped in msg and "'rules:' list" in msg and "allowed kinds: auto, rules" in msg and "fix:" in msg
    with pytest.raises(ConfigError, match="'harbor' is not a known policy kind.*allowed here: auto, rules"):
        load_policy(None, "harbor")
    with pytest.raises(ConfigError, match="2 plug-in kinds, not one"):
        load_policy(shipped, plugins={**PLUGINS, "other": PLUGINS["harbor"]})


def test_items_from_harbor_files_carry_schema_and_expected(demo_data):
    cfg = EvalSetConfig(name="cp", path=str(demo_data / "eval" / "compliance.jsonl"), schema="offer",
                        json_when="expect.refund_offer",
                        expected={"amount": "expect.amount", "type": "expect.refund_type"})
    items = load_items(cfg, {"offer": str(demo_data / "policy" / "refund_offer.schema.json")})
    rows = [json.loads(x) for x in (demo_data / "eval" / "compliance.jsonl").read_text().splitlines()]
    assert [it.id for it in items] == [r["id"] for r in rows]
    for it, r in zip(items, rows):
        assert it.prompt == r["messages"] and it.target == r["reference"] and it.category == r["category"]
        assert (it.schema is not None) == r["expect"]["refund_offer"]
        if r["expect"]["refund_offer"]:
            assert it.expected == {"amount": r["expect"]["amount"], "type": r["expect"]["refund_type"]}
            assert check_reply(it.target, it, None)["schema_valid"] is True  # the reference is a valid offer
            assert all(check_reply(it.target, it, None)["correct"].values())
        else:
            assert it.expected == {}
    assert len(load_items(EvalSetConfig(name="cp", path=cfg.path, limit=3))) == 3


def test_items_use_the_last_assistant_turn_as_target(tmp_path):
    path = tmp_path / "e.jsonl"
    rec = {"id": "a", "category": "x", "schema": "s.json", "expected": {"n": 1},
           "messages": [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"},
                        {"role": "user", "content": "q2"}, {"role": "assistant", "content": "a2"}]}
    path.write_text(json.dumps(rec) + "\n" + json.dumps({"messages": [{"role": "user", "content": "only"}]}) + "\n")
    (tmp_path / "s.json").write_text(json.dumps(SCHEMA))
    items = load_items(EvalSetConfig(name="e", path=str(path)), {"s.json": str(tmp_path / "s.json")})
    assert [m["content"] for m in items[0].prompt] == ["q1", "a1", "q2"] and items[0].target == "a2"
    assert items[0].schema == SCHEMA and items[0].expected == {"n": 1}
    assert items[1].target is None and items[1].conversation() is None and items[1].category == "(none)"
    assert items[1].id == "e:2"


def test_human_ratings_csv_and_jsonl(tmp_path):
    csv_path = tmp_path / "h.csv"
    csv_path.write_text(textwrap.dedent("""\
        prompt_id,checkpoint,tone,policy,correctness
        p1,checkpoint-10,5,5,3
        p2,checkpoint-10,3,1,
        p1,final,1,1,1
        """), encoding="utf-8")
    got = load_human(csv_path, (1, 5))
    assert got["checkpoint-10"] == {"n": 2, "human_tone": 0.75, "human_policy": 0.5, "human_correctness": 0.5}
    assert got["final"]["human_tone"] == 0.0
    jl = tmp_path / "h.jsonl"
    jl.write_text("\n".join(json.dumps(r) for r in [
        {"prompt_id": "p1", "checkpoint": "final", "tone": 7, "policy": 10, "correctness": 4}]), encoding="utf-8")
    assert load_human(jl, (0, 10))["final"] == {"n": 1, "human_tone": 0.7, "human_policy": 1.0,
                                               "human_correctness": 0.4}
    bad = tmp_path / "bad.csv"
    bad.write_text("prompt_id,checkpoint,tone,policy,correctness\np1,final,6,x,1\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_human(bad, (1, 5))
    assert len(err.value.problems) == 3  # tone out of scale, policy not a number, and the fix


def test_combined_score_uses_only_measured_weighted_components():
    s = combined_score({"policy": 0.8, "win_rate": 0.4, "ifeval": 0.1, "human_tone": None},
                       {"policy": 2, "win_rate": 1, "ifeval": 0, "human_tone": 1, "correctness": 1})
    assert s["score"] == round((2 * 0.8 + 0.4) / 3, 4)
    assert s["components"] == {"policy": 0.8, "win_rate": 0.4}
    assert s["unmeasured"] == ["correctness", "human_tone"]
    assert combined_score({}, {"policy": 1})["score"] is None


@pytest.mark.parametrize("name", ["items", "judge", "loss", "regression", "score"])
def test_doctests(name):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(f"sftpipe.evaluate.{name}"))
    assert result.failed == 0 and result.attempted > 0
