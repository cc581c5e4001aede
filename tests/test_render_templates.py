"""Exact masks for every built-in template and for real model templates (tests/assets/templates)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sftpipe.conversation import Conversation, Message
from sftpipe.errors import RecordError
from sftpipe.models import load_tokenizer
from sftpipe.render import ChatRenderer
from sftpipe.templates import builtin_names, load_template

ASSETS = Path(__file__).parent / "assets" / "templates"
TOKENS = json.loads((ASSETS / "tokens.json").read_text())
REAL = sorted(p.stem for p in ASSETS.glob("*.jinja"))
# Templates whose history rendering differs from serving, so each trained turn becomes its own example: Qwen3 drops
# earlier turns' reasoning; Mistral v0.3 shows the system prompt only in the last user turn; the DeepSeek R1/V3 and
# Nemotron 3 serving prompts open a think block that history replies never show (sftpipe trains what the model
# generates after it: reasoning, or an empty think, then the reply).
# Llama 3.1's header ends in "\n\n", which SmolLM2's tokenizer (standing in for Llama's) merges into one token
# only when the prompt is tokenized alone, as serving does: also one serving example per turn.
REWRITES = {"qwen3-8b", "mistral-7b-instruct-v0.3", "deepseek-r1-distill-qwen", "deepseek-v3", "nemotron-3-nano",
            "nemotron-3-super", "nemotron-3-ultra", "nemotron-3.5-lightning", "llama3.1-8b-instruct"}
NO_SYSTEM_ROLE = {"gemma-2-2b-it"}
# The token that closes a reply (what serving must stop on); not always the tokenizer's eos. Cohere 2's turn ending
# is two control tokens, both trained.
REAL_EOT = {"smollm2-135m-instruct": "<|im_end|>", "llama3.1-8b-instruct": "<|eot_id|>", "qwen3-8b": "<|im_end|>",
            "mistral-7b-instruct-v0.3": "</s>", "gemma-2-2b-it": "<end_of_turn>", "qwen2.5-7b-instruct": "<|im_end|>",
            "phi-3-mini-4k-instruct": "<|end|>", "deepseek-r1-distill-qwen": "<｜end▁of▁sentence｜>",
            "deepseek-v3": "<｜end▁of▁sentence｜>", "nemotron-3-nano": "<|im_end|>", "nemotron-3-super": "<|im_end|>",
            "nemotron-3-ultra": "<|im_end|>", "nemotron-3.5-lightning": "<|im_end|>",
            "cohere2": "<|END_RESPONSE|><|END_OF_TURN_TOKEN|>", "smolvlm2": "<end_of_utterance>",
            "idefics3": "<end_of_utterance>"}


def test_template_rejecting_a_role_is_a_record_error():  # raises "System role not supported"
    _, r = real_renderer("gemma-2-2b-it")
    with pytest.raises(RecordError, match="System role not supported") as info:
        r.render(CONV)
    assert info.value.reason == "template_rejected"

CONV = Conversation([
    Message("system", "You are Harbor Support."),
    Message("user", "Where is order HB-123456?"),
    Message("assistant", "Order HB-123456 ships today."),
    Message("user", "And the refund?"),
    Message("assistant", "Refunds take up to 5 business days, never instantly."),
], {"id": "t1"})
NO_SYSTEM = Conversation(CONV.messages[1:], {"id": "t2"})


def trained_runs(tok, ex) -> list[str]:
    runs, cur = [], []
    for tid, lab in zip(ex.input_ids, ex.labels):
        if lab != -100:
            assert lab == tid, "a label must be the token itself (HF shifts internally)"
            cur.append(tid)
        elif cur:
            runs.append(cur)
            cur = []
    runs += [cur] if cur else []
    return [tok.decode(r, skip_special_tokens=False) for r in runs]


def real_renderer(name: str):
    tok = load_tokenizer("smollm2-135m-instruct")
    info = TOKENS[name]
    tok.add_special_tokens({"additional_special_tokens": info["control"]}, replace_extra_special_tokens=False)
    for attr in ("bos", "eos"):
        if info[attr]:
            setattr(tok, f"{attr}_token", info[attr])
    return tok, ChatRenderer(tok, load_template(str(ASSETS / f"{name}.jinja"), tok))


SERVING_EDGE = {"llama3"}
EXPECTED_EOT = {"chatml": "<|im_end|>", "llama3": "<|eot_id|>", "gemma": "<end_of_turn>", "phi3": "<|end|>",
                "mistral": "EOS", "alpaca": "EOS", "zephyr": "EOS"}


@pytest.mark.parametrize("name", builtin_names())
def test_builtin_masks_are_exact(name, tok):
    r = ChatRenderer(tok, load_template(name, tok))
    eot = tok.eos_token if EXPECTED_EOT[name] == "EOS" else EXPECTED_EOT[name]
    for conv in (CONV, NO_SYSTEM):
        examples = r.render(conv)
        replies = [m.content for m in conv.messages if m.role == "assistant"]
        runs = [run for ex in examples for run in trained_runs(tok, ex)]
        assert [run.lstrip(" ") for run in runs] == [c + eot for c in replies]
        assert sum(ex.eot_trained for ex in examples) == 2 and all(ex.boundary_tokens == 0 for ex in examples)
        if name in SERVING_EDGE:
            # SmolLM2's GPT-2 style tokenizer splits "\n\nOrder" into "\n", "\n", "Order", but a serving prompt
            # ending in "\n\n" into one token: each turn becomes a serving example (prompt tokenized alone)
            assert [e.meta["turn"] for e in examples] == [i for i, m in enumerate(conv.messages)
                                                          if m.role == "assistant"]
            for e in examples:
                prompt = r.encode_prompt(e.messages[:-1])
                assert e.input_ids[: len(prompt)] == prompt and e.labels[len(prompt) - 1] == -100
            continue
        (ex,) = examples
        assert ex.text == tok.apply_chat_template(conv.to_template(), tokenize=False)


@pytest.mark.parametrize("name", REAL)
def test_real_template_masks_are_exact(name):
    tok, r = real_renderer(name)
    eot = REAL_EOT[name]
    conv = NO_SYSTEM if name in NO_SYSTEM_ROLE else CONV
    examples = r.render(conv)
    replies = [m.content for m in conv.messages if m.role == "assistant"]
    if name in REWRITES:
        assert len(examples) == 2, "a history-rewriting template must split per turn"
        runs = [trained_runs(tok, e) for e in examples]
        assert [len(x) for x in runs] == [1, 1]
        trained = [x[0] for x in runs]
    else:
        assert len(examples) == 1
        trained = trained_runs(tok, examples[0])
    # Some templates put generated text before the content (e.g. an empty <think></think>): it is trained,
    # because serving makes the model generate it, but the reply itself must end the run with its eot.
    assert len(trained) == 2
    for run, reply in zip(trained, replies):
        assert run.rstrip("\n").endswith(reply + eot) or run.endswith(reply.strip() + eot), (run, reply)
        assert "Harbor Support" not in run and "HB-123456?" not in run and "assistant" not in run[:20].lower()
    for e in examples:
        assert e.boundary_tokens == 0 and e.eot_trained == e.trained_messages


# Random conversations: content from unicode text, whitespace and control-token lookalikes.
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40).filter(lambda s: s.strip())
PIECES = st.lists(st.one_of(TEXT, st.sampled_from(["<|im_end|>", "<|im_start|>", "\n", "  ", "é", "🙂", "\t"])),
                  min_size=1, max_size=4).map("".join).filter(lambda s: s.strip())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(turns=st.lists(st.tuples(PIECES, PIECES), min_size=1, max_size=3), system=st.one_of(st.none(), PIECES))
def test_property_only_assistant_text_is_trained(tok, turns, system):
    r = ChatRenderer(tok, load_template("chatml", tok))
    msgs = ([Message("system", system)] if system else [])
    for user, reply in turns:
        msgs += [Message("user", user), Message("assistant", reply)]
    examples = r.render(Conversation(msgs))
    end_id = tok.convert_tokens_to_ids("<|im_end|>")
    assert all(ex.boundary_tokens == 0 for ex in examples)
    if examples[0].prompt_chars is not None:
        # A token would straddle a reply's edge: one serving example per turn, the prompt tokenized as serving does
        assert len(examples) == len(turns)
        for ex, (_, reply) in zip(examples, turns):
            prompt = r.encode_prompt(ex.messages[:-1])
            assert ex.input_ids[: len(prompt)] == prompt and ex.text.startswith(r.render_text(
                ex.messages[:-1], add_generation_prompt=True))
            assert set(range(len(prompt))).isdisjoint(k for k, lab in enumerate(ex.labels) if lab != -100)
            trained = [t for t, lab in zip(ex.input_ids, ex.labels) if lab != -100]
            # the reply as text (control strings in it split off as text, as transformers does), then its end-of-turn
            reply_ids = tok(reply, add_special_tokens=False, split_special_tokens=True)["input_ids"]
            assert trained[-1] == end_id and end_id not in trained[:-1]
            assert tok.decode(trained[:-1]) == tok.decode(reply_ids), "the reply as text, then its end-of-turn"
            assert ex.input_ids.count(end_id) == len(ex.messages), "content must never produce a control token"
        return
    (ex,) = examples
    ids, offsets, _ = r.encode(Conversation(msgs).to_template(), ex.text)
    assert ids == ex.input_ids
    # allowed chars: each reply's span plus its closing <|im_end|>
    allowed, pos = set(), 0
    for _, reply in turns:
        start = ex.text.index("<|im_start|>assistant\n" + reply + "<|im_end|>", pos) + len("<|im_start|>assistant\n")
        end = start + len(reply) + len("<|im_end|>")
        allowed.update(range(start, end))
        pos = end
    trained_chars = {c for (a, b), lab in zip(offsets.tolist(), ex.labels) if lab != -100 for c in range(a, b)}
    assert trained_chars <= allowed, "a non-assistant character was trained"
    # byte-level merges across odd characters can leave a char outside every token's offsets: not a mask question
    covered = {c for a, b in offsets.tolist() for c in range(a, b)}
    assert (allowed & covered) == trained_chars, "every reply character is trained"
    assert ex.input_ids.count(end_id) == len(msgs), "content must never produce a control token"
