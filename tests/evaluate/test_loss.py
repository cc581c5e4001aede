"""Held-out loss on assistant tokens: equals the model's own loss per example, independent of batching; pooled
per category and per frequency decile."""

from __future__ import annotations

import math

import pytest
import torch

from sftpipe.conversation import Message
from sftpipe.evaluate.items import EvalItem
from sftpipe.evaluate.loss import heldout_loss, summarize, token_nll
from sftpipe.stats import frequency_deciles
from sftpipe.models import tiny_model
from sftpipe.render import ChatRenderer
from sftpipe.templates import load_template

TEXTS = [("refund", "I want my money back.", "Your refund of 12.50 EUR is on its way."),
         ("refund", "Refund please, order HB-123456.", "Done: 3 business days."),
         ("order_status", "Where is my parcel? It has been a long time and I am worried now.", "It ships today."),
         ("lockout", "I am locked out.", "Use the recovery page.")]


@pytest.fixture()
def setup(tok):
    renderer = ChatRenderer(tok, load_template("model", tok))
    items = [EvalItem(id=str(k), set="s", category=c, messages=[Message("user", u)], target=a)
             for k, (c, u, a) in enumerate(TEXTS)]
    examples = [renderer.render(it.conversation())[0] for it in items]
    return tiny_model(tok, seed=5), renderer, items, examples


def test_token_nll_equals_the_models_own_loss_per_example(setup):
    model, _, _, examples = setup
    got = token_nll(model, examples, tokens_per_batch=4096)  # all four in one padded batch
    for ex, (nll, n) in zip(examples, got):
        with torch.no_grad():
            ref = model(input_ids=torch.tensor([ex.input_ids]), labels=torch.tensor([ex.labels])).loss
        assert n == ex.n_trained > 0
        assert nll / n == pytest.approx(float(ref), rel=1e-4)


def test_token_nll_does_not_depend_on_batching(setup):
    model, _, _, examples = setup
    one = token_nll(model, examples, tokens_per_batch=1)  # one example per batch
    many = token_nll(model, examples, tokens_per_batch=100_000)
    assert [n for _, n in one] == [n for _, n in many]
    assert [x for x, _ in one] == pytest.approx([x for x, _ in many], rel=1e-4)


def test_token_nll_without_logits_to_keep(setup, monkeypatch):
    model, _, _, examples = setup
    fast = token_nll(model, examples)
    monkeypatch.setattr("sftpipe.evaluate.loss._accepts_logits_to_keep", lambda m: False)
    slow = token_nll(model, examples)
    assert [x for x, _ in fast] == pytest.approx([x for x, _ in slow], rel=1e-4)


def test_heldout_loss_counts_only_assistant_tokens_and_pools_by_category(setup):
    model, renderer, items, examples = setup
    deciles = {"refund": 1, "order_status": 4, "lockout": 10}
    out = heldout_loss(model, renderer, items + [EvalItem("x", "s", "refund", [Message("user", "q")], None)],
                       deciles)
    per = token_nll(model, examples)
    assert out["overall"]["tokens"] == sum(e.n_trained for e in examples)
    assert out["overall"]["examples"] == 4  # the item without a target is not scored
    refund = [p for p, it in zip(per, items) if it.category == "refund"]
    assert out["per_category"]["refund"]["loss"] == pytest.approx(
        sum(x for x, _ in refund) / sum(n for _, n in refund), abs=1e-5)
    assert set(out["per_decile"]) == {"1", "4", "10"}
    assert out["per_decile"]["10"]["loss"] == out["per_category"]["lockout"]["loss"]
    assert out["overall"]["perplexity"] == pytest.approx(math.exp(out["overall"]["loss"]), rel=1e-4)
    # every trained token is an assistant token: the reply text and its end-of-turn, nothing of the prompt
    ex = examples[0]
    trained = renderer.tokenizer.decode([t for t in ex.labels if t != -100])
    assert trained == TEXTS[0][2] + "<|im_end|>"


def test_summarize_pools_tokens_not_examples():
    s = summarize([("a", 1.0, 1), ("a", 9.0, 3), ("b", 4.0, 2)], {"a": 2, "b": 9})
    assert s["overall"] == {"loss": 2.333333, "perplexity": round(math.exp(14 / 6), 4), "tokens": 6, "examples": 3}
    assert s["per_category"]["a"]["loss"] == 2.5  # (1 + 9) / 4, not the mean of 1.0 and 3.0
    assert list(s["per_decile"]) == ["2", "9"]


def test_frequency_deciles_known_values():
    counts = {"order_status": 28, "shipping_delay": 18, "refund": 14, "address_change": 10, "cancellation": 9,
              "damaged_item": 7, "partial_refund": 6, "account_lockout": 4, "chargeback": 3, "fraud": 1}
    d = frequency_deciles(counts, ["never_seen"])
    assert d == {"order_status": 1, "shipping_delay": 3, "refund": 5, "address_change": 7, "cancellation": 8,
                 "damaged_item": 8, "partial_refund": 9, "account_lockout": 10, "chargeback": 10, "fraud": 10,
                 "never_seen": 10}
    assert frequency_deciles({"b": 5, "a": 5}) == {"a": 1, "b": 6}  # ties ranked by name
    with pytest.raises(ValueError):
        frequency_deciles({"a": -1})
