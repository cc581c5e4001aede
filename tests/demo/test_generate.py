"""Tests for the Harbor demo generator: determinism, skew, policy-clean gold data, caught noise, lengths."""

from __future__ import annotations

import difflib
import json
import re
from collections import Counter

import jsonschema
import pytest
import yaml

from sftpipe.demo import SIZES, check_reply, check_thread, generate
from sftpipe.demo.generate import NOISE_RATES, PII_RATE, REPLY_NOISE, noise_counts
from sftpipe.demo.evalsets import TEMPTATIONS, TRAIN_PUSHES
from sftpipe.demo.noise import luhn_valid
from sftpipe.demo.policy import ESCALATION, FRAUD_WARNING, split_refund_json
from sftpipe.doctor.text import COPIED, overlap

# The rule each reply-noise label must trip (not just "some rule").
NOISE_RULE = {
    "policy_instant_refund": "instant_refund", "policy_no_fraud_warning": "fraud_warning_missing",
    "policy_wrong_amount": "refund_amount_wrong", "policy_invalid_json": "refund_json_invalid",
    "truncated": "incomplete", "empty": "empty", "toxic_assistant": "insult", "boilerplate": "boilerplate",
}


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("small"), size="small", seed=0)


@pytest.fixture(scope="module")
def default(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("default"), size="default", seed=0)


def load(result):
    records = read_jsonl(result.files["export"])
    manifest = {m["id"]: m for m in read_jsonl(result.files["noise_manifest"])}
    return records, manifest


def test_same_seed_same_bytes_and_different_seed_differs(tmp_path):
    a = generate(tmp_path / "a", size="tiny", seed=7)
    b = generate(tmp_path / "b", size="tiny", seed=7)
    c = generate(tmp_path / "c", size="tiny", seed=8)
    assert a.files.keys() == b.files.keys()
    for key in a.files:
        assert a.files[key].read_bytes() == b.files[key].read_bytes(), key
    for key in ("export", "noise_manifest", "general", "redteam", "compliance", "decisions"):
        assert a.files[key].read_bytes() != c.files[key].read_bytes(), key
    leftovers = [p for p in (tmp_path / "a").rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


def test_counts_match_lines_written(tmp_path):
    result = generate(tmp_path, size="tiny", seed=1)
    for key, path in result.files.items():
        if path.suffix == ".jsonl":
            assert result.counts[key] == len(path.read_text(encoding="utf-8").splitlines()), key
    assert result.counts["export"] == SIZES["tiny"]
    assert result.counts["clean"] + result.counts["noisy"] == result.counts["export"]
    assert sum(v for k, v in result.counts.items() if k.startswith("category:")) == result.counts["export"]


def test_unknown_size_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="allowed: tiny, small, default"):
        generate(tmp_path, size="huge")


def test_category_frequencies_are_skewed(small):
    records, _ = load(small)
    freq = Counter(r["category"] for r in records)
    assert len(freq) >= 8
    assert max(freq.values()) >= 5 * min(freq.values())
    assert freq.most_common(1)[0][0] == "order_status"


def test_export_records_carry_facts_and_no_noise_labels(small):
    records, manifest = load(small)
    assert [r["id"] for r in records] == list(manifest)
    system = {r["messages"][0]["content"] for r in records}
    assert len(system) == 1
    for r in records:
        assert set(r) == {"id", "category", "facts", "messages"}
        assert [m["role"] for m in r["messages"]][:2] == ["system", "user"]
        assert {"order_id", "currency", "refund_due", "eta_days", "escalate", "customer"} <= set(r["facts"])


def policy_amount(facts):
    """The refund amount from the written rule, recomputed here from the items."""
    if facts["refund_type"] == "full":
        return facts["order_total"]
    prices = {i["name"]: i["price"] for i in facts["items"]}
    return round(sum(prices[n] for n in facts["affected_items"]), 2)


def test_clean_threads_pass_policy_and_refund_json_is_exact(small):
    records, manifest = load(small)
    schema = json.loads(small.files["refund_offer.schema.json"].read_text())
    limits = yaml.safe_load(small.files["rules.yaml"].read_text())["limits"]
    checked = refunds = 0
    for r in records:
        labels = set(manifest[r["id"]]["noise"])
        if labels & REPLY_NOISE or "non_english" in labels:
            continue
        assert check_thread(r) == [], (r["id"], check_thread(r))
        checked += 1
        facts, reply = r["facts"], r["messages"][-1]["content"]
        blocks, _ = split_refund_json(reply)
        assert len(blocks) == (1 if facts["refund_due"] else 0), r["id"]
        assert (ESCALATION in reply) == facts["escalate"]
        if facts["refund_due"]:
            refunds += 1
            offer = json.loads(blocks[0])
            jsonschema.validate(offer, schema)
            assert offer["amount"] == pytest.approx(policy_amount(facts), abs=1e-9)
            escalated = offer["amount"] > limits["escalate_amount_over"]
            assert facts["escalate"] == escalated
            assert offer["eta_days"] == limits["eta_days"]["escalated_refund" if escalated else offer["type"]]
    assert checked > 350 and refunds > 80


def test_policy_noise_is_caught_by_the_named_rule(small):
    records, manifest = load(small)
    seen = Counter()
    for r in records:
        for label in manifest[r["id"]]["noise"]:
            if label in NOISE_RULE:
                assert NOISE_RULE[label] in check_thread(r), (r["id"], label, check_thread(r))
                seen[label] += 1
    assert set(seen) == set(NOISE_RULE)


def test_noise_fractions_match_manifest(default):
    records, manifest = load(default)
    n = len(records)
    by_id = {r["id"]: r for r in records}
    labels = Counter(x for m in manifest.values() for x in m["noise"])
    for label, k in noise_counts(n).items():
        assert labels[label] == k == pytest.approx(n * NOISE_RATES[label], abs=1), label
    drop = sum(any(not x.startswith("pii_") for x in m["noise"]) for m in manifest.values())
    assert 0.20 <= drop / n <= 0.25
    assert sum(any(x.startswith("pii_") for x in m["noise"]) for m in manifest.values()) == round(n * PII_RATE)
    assert default.counts["drop_noise"] == drop

    for m in manifest.values():
        r = by_id[m["id"]]
        last = r["messages"][-1]["content"]
        if "exact_duplicate" in m["noise"]:
            assert r["messages"] == by_id[m["of"]]["messages"] and m["of"] != m["id"]
        if "near_duplicate" in m["noise"]:
            a, b = r["messages"][1]["content"], by_id[m["of"]]["messages"][1]["content"]
            assert a != b and difflib.SequenceMatcher(None, a, b).ratio() > 0.8
            assert r["messages"][2:] == by_id[m["of"]]["messages"][2:]
        if "empty" in m["noise"]:
            assert last.strip() == ""
        if "non_english" in m["noise"]:
            text = " ".join(x["content"] for x in r["messages"][1:])
            assert m["lang"] in {"es", "fr", "de", "pt"} and not re.search(r"\b(the|my|is|and)\b", text)
        for p in m.get("pii", []):
            assert p["value"] in r["messages"][p["message_index"]]["content"]
            if p["kind"] == "card":
                assert luhn_valid(p["value"]) and len(re.sub(r"\D", "", p["value"])) == 16
        assert {f"pii_{p['kind']}" for p in m.get("pii", [])} == {x for x in m["noise"] if x.startswith("pii_")}
    kinds = {p["kind"] for m in manifest.values() for p in m.get("pii", [])}
    assert kinds == {"email", "phone", "card", "name", "address", "ip"}
    assert any(p["message_index"] > 1 for m in manifest.values() for p in m.get("pii", []))  # assistant PII


def test_clean_conversations_are_short_for_smollm2(small, tok):
    records, manifest = load(small)
    lengths = sorted(len(tok(tok.apply_chat_template(r["messages"], tokenize=False))["input_ids"])
                     for r in records if not manifest[r["id"]]["noise"])
    assert len(lengths) > 300
    assert lengths[int(0.9 * len(lengths))] < 320
    words = sorted(len(split_refund_json(r["messages"][-1]["content"])[1].split())
                   for r in records if not manifest[r["id"]]["noise"])
    assert 20 <= words[len(words) // 2] <= 80


def test_eval_sets(default):
    for key in ("redteam", "compliance", "decisions"):
        rows = read_jsonl(default.files[key])
        assert len(rows) >= 40
        for row in rows:
            assert [m["role"] for m in row["messages"]] == ["system", "user"]
            assert check_reply(row["reference"], row["facts"], row["category"]) == []
            assert row["expect"]["fraud_warning"] == (FRAUD_WARNING in row["reference"])
            assert row["expect"]["escalate"] == (ESCALATION in row["reference"])
            if row["expect"]["ask_order_id"]:
                assert row["facts"]["order_id"] not in row["messages"][1]["content"]
    redteam = read_jsonl(default.files["redteam"])
    assert len({r["expect"]["temptation"] for r in redteam}) >= 6
    assert any("<|im_start|>" in r["messages"][1]["content"] for r in redteam)
    users = lambda rows: ["\n".join(m["content"] for m in r["messages"] if m["role"] == "user") for r in rows]
    export = users(read_jsonl(default.files["export"]))
    for key in ("redteam", "compliance", "decisions"):  # no eval prompt is (nearly) a training prompt, as doctor says
        prompts = users(read_jsonl(default.files[key]))
        assert max(overlap(export, prompts)) < COPIED and not set(export) & set(prompts), key
    decisions = read_jsonl(default.files["decisions"])
    assert all(r["expect"]["refund_offer"] == ("```json" in r["reference"]) for r in decisions)
    assert len({r["category"] for r in decisions}) == 5
    assert sum(r["expect"]["refund_offer"] for r in decisions) >= 0.55 * len(decisions)  # the refund JSON bar's items
    for category, decision in (("refund", "refund_offer"), ("cancellation", "refund_offer"),
                               ("partial_refund", "escalate"), ("shipping_delay", "escalate")):  # both outcomes
        outcomes = [r["expect"][decision] for r in decisions if r["category"] == category]
        assert 0.3 <= sum(outcomes) / len(outcomes) <= 0.7, (category, outcomes)


def test_training_pushes_use_other_words_than_the_red_team_set(default):
    redteam_lines = {line for _, _, lines in TEMPTATIONS.values() for line in lines}
    users = [r["messages"][1]["content"] for r in read_jsonl(default.files["export"])]
    pushed = [u for u in users if any(line.split("{")[0] in u for lines in TRAIN_PUSHES.values() for line in lines)]
    assert len(pushed) >= 0.05 * len(users)
    assert not any(line.split("{")[0] in u for u in users for line in redteam_lines)


def test_every_category_has_a_floor_and_decisions_follow_their_rule(default):
    records = read_jsonl(default.files["export"])
    freq = Counter(r["category"] for r in records)
    assert min(freq.values()) >= 0.04 * len(records)
    manifest = {m["id"]: m for m in read_jsonl(default.files["noise_manifest"])}
    for r in records:
        if manifest[r["id"]]["noise"]:
            continue
        reply = r["messages"][-1]["content"]
        if ESCALATION in reply and "```json" in reply:  # the decision comes before the JSON it shapes
            assert reply.index(ESCALATION) < reply.index("```json"), r["id"]
        if r["category"] == "shipping_delay":
            rule = "past our 5-day limit, so " if r["facts"]["escalate"] else "within our 5-day limit, so "
            assert f"{r['facts']['days_late']} days late, {rule}" in reply, r["id"]


def test_general_instructions_are_correct_and_sized(default):
    rows = read_jsonl(default.files["general"])
    share = len(rows) / default.counts["clean"]
    assert 0.10 <= share <= 0.30
    assert len({(r["instruction"], r["input"]) for r in rows}) == len(rows)
    sums = 0
    for r in rows:
        assert set(r) == {"instruction", "input", "output"} and r["output"]
        m = re.fullmatch(r"What is (\d+) \+ (\d+)\?", r["instruction"])
        if m:
            assert r["output"] == f"{m[1]} + {m[2]} = {int(m[1]) + int(m[2])}."
            sums += 1
        if r["instruction"].startswith("Sort these numbers"):
            nums = [int(x) for x in r["input"].split(", ")]
            assert [int(x) for x in r["output"].split(", ")] == sorted(nums)
    assert sums > 10


def test_policy_assets_agree(small):
    policy = small.files["policy.md"].read_text()
    rules = yaml.safe_load(small.files["rules.yaml"].read_text())
    assert rules["phrases"]["fraud_warning"] in policy and rules["phrases"]["escalation"] in policy
    schema = json.loads(small.files["refund_offer.schema.json"].read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["additionalProperties"] is False and len(schema["required"]) == 6


FACTS = {"order_id": "HB-123456", "order_id_given": True, "currency": "EUR", "refund_due": True,
         "refund_type": "partial", "refund_amount": 12.5, "eta_days": 3, "escalate": False}
GOOD = ('Sorry about that. I can refund 12.50 EUR for order HB-123456.\n\n```json\n{"order_id": "HB-123456", '
        '"amount": 12.5, "currency": "EUR", "type": "partial", "reason": "missing items", "eta_days": 3}\n```\n\n'
        f"It takes up to 3 business days. {FRAUD_WARNING}")


@pytest.mark.parametrize("reply, rule", [
    (GOOD.replace("HB-123456.", "HB-654321."), "wrong_order_id"),
    (GOOD.replace('"amount": 12.5', '"amount": 25'), "refund_amount_wrong"),
    (GOOD.replace('"eta_days": 3', '"eta_days": 5'), "refund_eta_wrong"),
    (GOOD.replace('"partial"', '"full"'), "refund_type_wrong"),
    (GOOD.replace("3}", '3, "note": "x"}'), "refund_json_invalid"),
    (GOOD + " " + ESCALATION, "escalation_unwarranted"),
    (GOOD.replace("It takes up to 3 business days.", "The money is back right away."), "instant_refund"),
    (GOOD.replace(FRAUD_WARNING, ""), "fraud_warning_missing"),
    (GOOD[:-40], "incomplete"),
    ("Thank you for contacting Harbor Support. " + GOOD, "boilerplate"),
])
def test_check_reply_flags_each_rule(reply, rule):
    assert check_reply(GOOD, FACTS, "partial_refund") == []
    assert rule in check_reply(reply, FACTS, "partial_refund")


def test_check_reply_ask_mode():
    facts = {**FACTS, "order_id_given": False}
    assert check_reply(f"Sorry! Could you share your order ID? {FRAUD_WARNING}", facts, "partial_refund") == []
    assert "order_id_not_requested" in check_reply(f"Sorry! {FRAUD_WARNING}", facts, "partial_refund")
    assert "refund_json_unexpected" in check_reply(GOOD, facts, "partial_refund")
    with pytest.raises(ValueError, match="unknown category"):
        check_reply(GOOD, FACTS, "refunds")
