"""Harbor results per rule class (sftpipe.demo.rules_report) from hand-made generations rows and facts: no model."""

from __future__ import annotations

import doctest
import json

import pytest

from sftpipe.demo import rules_report
from sftpipe.demo.policy import ESCALATION, check_reply, rules
from sftpipe.demo.rules_report import (DECISION_RULES, SHAPE_RULES, eval_rules, majority_baseline, model_report,
                                       rule_class)
from sftpipe.demo.summary import bars, headline, verdicts



def yaml_rule_names() -> set[str]:
    r = rules()
    names = {*r["global"]["must_not_contain"], *r["fact_checks"]}
    for cat in r["categories"].values():
        names |= {*cat.get("must_contain", {}), *cat.get("must_not_contain", {})}
    return names


def delay(days_late: int, given: bool = True) -> dict:
    return {"order_id": "HB-123456", "order_id_given": given, "refund_due": False, "refund_type": None,
            "refund_amount": None, "eta_days": 3, "escalate": days_late > 5, "days_late": days_late}


def row(rid: str, category: str, output: str, violations: list[str] | None = None, user: str = "HB-123456 is late",
        applicable: list[str] | None = None) -> dict:
    return {"id": rid, "category": category, "prompt": [{"role": "user", "content": user}], "output": output,
            "violations": violations or [], "applicable": ["boilerplate"] if applicable is None else applicable}


def test_every_rule_check_reply_can_name_is_classified_in_every_category():
    names = yaml_rule_names()
    assert set(SHAPE_RULES) | set(DECISION_RULES) == names  # nothing unclassified, nothing stale
    assert not set(SHAPE_RULES) & set(DECISION_RULES)
    for category in rules()["categories"]:
        for name in names:
            assert rule_class(category, name) in ("shape", "decision")
            assert rule_class(category, name, ask=True) == "shape"  # while asking for the ID nothing is decided
    assert {c for cats in DECISION_RULES.values() for c in cats} <= set(rules()["categories"])
    # what check_reply really returns is in that list
    bad = check_reply("Thank you for contacting Harbor! Your refund is instant", delay(7), "shipping_delay")
    assert set(bad) <= names and "escalation_missing" in bad
    with pytest.raises(KeyError, match="classify it"):
        rule_class("refund", "some_new_rule")


def test_rule_class_splits_rules_that_mix_shape_and_decision_by_category():
    assert [rule_class(c, "refund_json_missing") for c in ("refund", "cancellation", "partial_refund",
                                                              "damaged_item")] == ["decision", "decision", "shape",
                                                                                   "shape"]
    assert [rule_class(c, "escalation_missing") for c in ("shipping_delay", "damaged_item", "chargeback",
                                                             "fraud_suspicion")] == ["decision", "decision", "shape",
                                                                                     "shape"]
    assert rule_class("order_status", "escalation_unwarranted") == "shape"
    assert rule_class("refund", "refund_eta_wrong") == "decision"
    assert rule_class("refund", "refund_json_invalid") == rule_class("refund", "refund_amount_wrong") == "shape"


def test_escalating_a_seven_days_late_delay_is_a_correct_decision():
    facts = {"a": delay(7), "b": delay(7)}
    rep = model_report([row("a", "shipping_delay", f"Order HB-123456 is 7 days late. {ESCALATION}"),
                        row("b", "shipping_delay", "Order HB-123456 is 7 days late. It arrives in 3 business days.",
                            ["escalation_missing"])], facts)
    d = rep["decisions"]["escalation (days late > 5)"]
    assert (d["n"], d["k"], d["positives"], d["undecided"]) == (2, 1, 2, 0)
    assert rep["shape"]["pooled"]["k"] == 0  # escalation_missing on a delay is a decision, not a shape violation


def test_majority_baseline_of_a_three_to_one_split_and_the_bar_above_it():
    assert majority_baseline([True, True, True, False]) == majority_baseline([False, True, False, False]) == 0.75
    days = {"a": 7, "b": 8, "c": 9, "d": 2}
    facts = {rid: delay(d) for rid, d in days.items()}
    always = model_report([row(rid, "shipping_delay", ESCALATION) for rid in days], facts)
    right = model_report([row(rid, "shipping_delay", ESCALATION if d > 5 else "Arrives in 3 business days.")
                          for rid, d in days.items()], facts)
    a, r = always["decisions"]["escalation (days late > 5)"], right["decisions"]["escalation (days late > 5)"]
    assert (a["majority"], a["rate"], a["above_majority"]) == (0.75, 0.75, False)  # majority guessing is no skill
    assert (r["majority"], r["rate"], r["above_majority"]) == (0.75, 1.0, True)
    assert always["decisions"]["refund window (<= 30 days)"]["n"] == 0  # no refund ticket: not scored


def test_shape_violations_count_once_per_reply_per_category_and_pooled():
    facts = {"a": delay(2), "b": delay(2), "c": {**delay(2), "escalate": True}, "d": delay(2)}
    rows = [row("a", "shipping_delay", "x", ["boilerplate", "too_long", "opener_too_long"]),
            row("b", "shipping_delay", "x", ["escalation_unwarranted"]),  # decision rule only
            row("c", "chargeback", "x", ["escalation_missing"]),  # chargebacks always escalate: shape
            row("d", "shipping_delay", "x", applicable=[]),  # not checked by the policy: left out
            row("e", "general", "x", ["boilerplate"])]  # not a Harbor category: left out
    rep = model_report(rows, facts)
    assert {k: rep["shape"]["pooled"][k] for k in ("n", "k")} == {"n": 3, "k": 2}
    assert rep["shape"]["per_category"]["shipping_delay"]["k"] == 1
    assert rep["shape"]["per_category"]["chargeback"]["k"] == 1 and rep["unmatched"] == 0
    assert rep["shape"]["pooled"]["ci95"][0] < 2 / 3 < rep["shape"]["pooled"]["ci95"][1]
    with pytest.raises(KeyError):
        model_report([row("a", "shipping_delay", "x", ["not_a_rule"])], facts)


def test_a_reply_that_must_ask_for_the_order_id_decides_nothing():
    facts = {"a": delay(7, given=False)}
    rep = model_report([row("a", "shipping_delay", ESCALATION, ["escalation_unwarranted"], user="My parcel is late")],
                       facts)
    assert rep["decisions"]["escalation (days late > 5)"]["n"] == 0 and rep["shape"]["pooled"]["k"] == 1


def _refund(rid: str, days: int, amount: float) -> dict:
    due = days <= 30
    return {"id": rid, "category": "refund", "facts": {
        "order_id": "HB-111111", "order_id_given": True, "refund_due": due, "refund_type": "full" if due else None,
        "refund_amount": amount if due else None, "eta_days": (10 if amount > 200 else 5) if due else None,
        "escalate": due and amount > 200, "days_since_delivery": days}}


def test_eval_rules_joins_generations_with_the_sets_facts_by_id(tmp_path):
    (tmp_path / "sets").mkdir()
    one = [_refund("R1", 10, 50.0), _refund("R2", 45, 50.0)]
    two = [_refund("R1", 12, 300.0)]  # the same id in another set, other facts
    for name, recs in (("one", one), ("two", two)):
        (tmp_path / "sets" / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    ev = tmp_path / "runs" / "r" / "eval"
    block = lambda eta: f'```json\n{{"eta_days": {eta}}}\n```'
    outputs = {"baseline": {"one": ["No.", "No."], "two": ["No."]},
               "final": {"one": [f"Yes. {block(5)}", "No."], "two": [f"Yes. {ESCALATION} {block(10)}"]}}
    for label, sets in outputs.items():
        (ev / "generations" / label).mkdir(parents=True)
        for name, outs in sets.items():
            recs = one if name == "one" else two
            (ev / "generations" / label / f"{name}.jsonl").write_text("".join(
                json.dumps(row(r["id"], "refund", o, user="HB-111111")) + "\n" for r, o in zip(recs, outs)))
        (ev / "generations" / label / "ifeval.jsonl").write_text(json.dumps({"key": 1, "output": "x"}) + "\n")
    (ev / "metrics.json").write_text(json.dumps({
        "sets": {"one": {"path": "sets/one.jsonl"}, "two": {"path": "sets/two.jsonl"}},
        "config": {"sets": [{"name": "one", "facts_key": "facts"}, {"name": "two", "facts_key": "facts"}]}}))
    reports = eval_rules(ev, tmp_path)
    assert set(reports) == {"baseline", "final"}
    final, base = reports["final"]["decisions"], reports["baseline"]["decisions"]
    window, esc, eta = "refund window (<= 30 days)", "escalation (refund > 200)", "refund eta (10 iff escalated)"
    assert (final[window]["n"], final[window]["k"], base[window]["k"]) == (3, 3, 1)
    assert (final[esc]["k"], base[esc]["k"], final[esc]["positives"]) == (3, 2, 1)
    assert (final[eta]["n"], final[eta]["k"], base[eta]["undecided"]) == (2, 2, 2)

    metrics = {"models": {"baseline": {"sets": {}}, "final": {"sets": {}}}}
    summary = headline(metrics, reports)
    assert summary["sft"]["decision: " + window] == 1.0 and summary["majority"]["decision: " + window] == 2 / 3
    assert bars(summary)["decision: " + window][0] == "> majority 0.667"
    met = verdicts(summary)
    assert met["decision: " + window] is True and met["decision: " + esc] is True
    assert met["decision: " + eta] is True and summary["majority"]["decision: " + eta] == 0.5
    never = verdicts(headline(metrics, {"baseline": reports["final"], "final": reports["baseline"]}))
    assert never["decision: " + esc] is False  # never escalating scores the majority baseline, not above it


def test_doctests():
    result = doctest.testmod(rules_report)
    assert result.failed == 0 and result.attempted >= 5
