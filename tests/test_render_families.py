"""Reasoning templates (DeepSeek R1/V3, Nemotron 3, Qwen3), multi-token turn endings (Cohere 2), content-part
templates (SmolVLM2, Idefics3) and the prompt/reply boundary, with the real SmolLM2 tokenizer standing in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from sftpipe.config import RenderConfig
from sftpipe.conversation import Conversation, Message
from sftpipe.errors import RecordError
from sftpipe.models import load_tokenizer
from sftpipe.parity import check_parity, save_tokenizer
from sftpipe.readers import parse_record
from sftpipe.render import ChatRenderer
from sftpipe.templates import load_template

ASSETS = Path(__file__).parent / "assets" / "templates"
TOKENS = json.loads((ASSETS / "tokens.json").read_text(encoding="utf-8"))
R1_EOS = "<｜end▁of▁sentence｜>"


def real_renderer(name: str):
    """A renderer for a real template, on the SmolLM2 tokenizer given that model's control tokens and bos/eos."""
    tok = load_tokenizer("smollm2-135m-instruct")
    info = TOKENS[name]
    tok.add_special_tokens({"additional_special_tokens": info["control"]}, replace_extra_special_tokens=False)
    for attr in ("bos", "eos"):
        if info[attr]:
            setattr(tok, f"{attr}_token", info[attr])
    return tok, ChatRenderer(tok, load_template(str(ASSETS / f"{name}.jinja"), tok))


def trained_runs(tok, ex) -> list[str]:
    """The trained tokens, decoded, one string per run of consecutive trained tokens."""
    runs: list[list[int]] = []
    for k, (tid, lab) in enumerate(zip(ex.input_ids, ex.labels)):
        if lab != -100:
            assert lab == tid
            if k and ex.labels[k - 1] != -100:
                runs[-1].append(tid)
            else:
                runs.append([tid])
    return [tok.decode(r, skip_special_tokens=False) for r in runs]


def reasoning_conv(second_reasoning: str | None = "Three plus three.") -> Conversation:
    return Conversation([Message("user", "2+2?"), Message("assistant", "4.", reasoning_content="Two and two."),
                         Message("user", "3+3?"), Message("assistant", "6.", reasoning_content=second_reasoning)],
                        {"id": "r1"})


def serving_prompt_ok(renderer: ChatRenderer, ex) -> bool:
    """The example starts with exactly the serving prompt's ids, and nothing in them is trained."""
    prompt = renderer.encode_prompt(ex.messages[:-1])
    return ex.input_ids[: len(prompt)] == prompt and set(ex.labels[: len(prompt)]) == {-100}


# -- reasoning -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["deepseek-r1-distill-qwen", "deepseek-v3"])
def test_deepseek_trains_reasoning_closing_tag_reply_and_eos_after_the_think_prompt(name):
    tok, r = real_renderer(name)
    examples = r.render(reasoning_conv())
    assert [e.meta["turn"] for e in examples] == [1, 3]  # serving drops earlier reasoning: one example per turn
    assert [trained_runs(tok, e) for e in examples] == [
        ["Two and two.\n</think>\n\n4." + R1_EOS], ["Three plus three.\n</think>\n\n6." + R1_EOS]]
    for e in examples:
        assert e.text[: e.prompt_chars].endswith("<｜Assistant｜><think>\n") and serving_prompt_ok(r, e)
        assert e.eot_trained == 1 and e.eot_ids == [tok.convert_tokens_to_ids(R1_EOS)]
    # the second prompt shows the first reply as history does: without its reasoning
    assert "Two and two" not in examples[1].text and "<｜Assistant｜>4." + R1_EOS in examples[1].text


def test_inline_think_and_the_thinking_alias_equal_reasoning_content():
    tok, r = real_renderer("deepseek-r1-distill-qwen")
    ids = [e.input_ids for e in r.render(reasoning_conv())]
    inline = parse_record({"id": "r1", "messages": [
        {"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "<think>\nTwo and two.\n</think>\n\n4."},
        {"role": "user", "content": "3+3?"}, {"role": "assistant", "content": "6.", "thinking": "Three plus three."}]})
    assert [e.input_ids for e in r.render(inline)] == ids


@pytest.mark.parametrize("name, empty_think", [("deepseek-r1-distill-qwen", "\n</think>\n\n"),
                                               ("nemotron-3-nano", "\n</think>\n"),
                                               ("nemotron-3-ultra", "</think>")])
def test_a_reply_without_reasoning_trains_an_empty_think_block(name, empty_think):
    tok, r = real_renderer(name)
    eot = R1_EOS if name.startswith("deepseek") else "<|im_end|>"
    examples = r.render(reasoning_conv(second_reasoning=None))
    assert trained_runs(tok, examples[-1]) == [empty_think + "6." + eot]
    assert examples[-1].text[: examples[-1].prompt_chars].endswith("<think>\n") and serving_prompt_ok(r, examples[-1])


def test_nemotron_trains_its_own_reasoning_layout_and_truncates_history_thinking():
    tok, r = real_renderer("nemotron-3-nano")
    first, second = r.render(reasoning_conv())
    assert trained_runs(tok, first) == ["Two and two.\n</think>\n4.<|im_end|>"]
    assert trained_runs(tok, second) == ["Three plus three.\n</think>\n6.<|im_end|>"]
    assert "<|im_start|>assistant\n<think></think>\n4.<|im_end|>" in second.text  # history, as serving shows it
    # with reasoning the template's own render continues the serving prompt: plain examples, exact parity
    assert first.prompt_chars is None and first.text == r.render_text(first.messages)


def test_empty_mode_drops_reasoning_and_trains_empty_think_blocks():
    tok, r = real_renderer("deepseek-r1-distill-qwen")
    r.reasoning = "empty"
    assert [trained_runs(tok, e) for e in r.render(reasoning_conv())] == [
        ["\n</think>\n\n4." + R1_EOS], ["\n</think>\n\n6." + R1_EOS]]
    tok, q = real_renderer("qwen3-8b")
    q.reasoning = "empty"
    assert trained_runs(tok, q.render(reasoning_conv())[0]) == ["<think>\n\n</think>\n\n4.<|im_end|>"]


def test_refuse_mode_rejects_a_reply_without_reasoning_only_on_think_prompt_templates():
    _, r = real_renderer("deepseek-r1-distill-qwen")
    r.reasoning = "refuse"
    assert len(r.render(reasoning_conv())) == 2
    with pytest.raises(RecordError, match="no reasoning") as info:
        r.render(reasoning_conv(second_reasoning=None))
    assert (info.value.reason, info.value.index) == ("no_reasoning", 3)
    _, q = real_renderer("qwen3-8b")  # Qwen3's prompt opens no think block: a reply may come without reasoning
    q.reasoning = "refuse"
    assert len(q.render(reasoning_conv(second_reasoning=None))) == 2


def test_qwen3_final_reply_shows_its_reasoning_content():
    tok, r = real_renderer("qwen3-8b")
    examples = r.render(reasoning_conv())
    assert trained_runs(tok, examples[1]) == ["<think>\nThree plus three.\n</think>\n\n6.<|im_end|>"]
    assert all(e.prompt_chars is None for e in examples)


def test_reasoning_a_template_cannot_show_is_refused_unless_empty(tok):
    r = ChatRenderer(tok, load_template("model", tok))
    with pytest.raises(RecordError, match="neither renders reasoning_content nor opens a think block") as info:
        r.render(reasoning_conv())
    assert (info.value.reason, info.value.index, info.value.field) == ("reasoning_not_rendered", 1,
                                                                       "reasoning_content")
    r.reasoning = "empty"
    (ex,) = r.render(reasoning_conv())
    assert trained_runs(tok, ex) == ["4.<|im_end|>", "6.<|im_end|>"]
    # a think block inside the content of a template that knows no reasoning is plain reply text
    r.reasoning = "keep"
    (ex,) = r.render(Conversation([Message("user", "q"), Message("assistant", "<think>x</think>y")]))
    assert trained_runs(tok, ex) == ["<think>x</think>y<|im_end|>"]


def test_reasoning_option_is_checked_and_documented_in_the_render_config(tok):
    with pytest.raises(ValueError, match="reasoning='maybe'; allowed: keep, empty, refuse"):
        ChatRenderer(tok, load_template("model", tok), reasoning="maybe")
    assert RenderConfig().reasoning == "keep"
    with pytest.raises(ValidationError, match="'keep', 'empty' or 'refuse'"):
        RenderConfig(reasoning="drop")


# -- turn endings ----------------------------------------------------------------------------------------------

def test_cohere2_trains_through_the_last_control_token_and_lists_every_ending_id(tmp_path):
    tok, r = real_renderer("cohere2")
    conv = Conversation([Message("system", "Be brief."), Message("user", "Hi"), Message("assistant", "Hello."),
                         Message("user", "Bye"), Message("assistant", "Goodbye.")])
    (ex,) = r.render(conv)
    ending = ["<|END_RESPONSE|>", "<|END_OF_TURN_TOKEN|>"]
    assert trained_runs(tok, ex) == ["Hello." + "".join(ending), "Goodbye." + "".join(ending)]
    ids = tok.convert_tokens_to_ids(ending)
    # eot_positions point at the first token of each ending (serving stops there); eot_ids hold them all
    assert [ex.input_ids[p] for p in ex.eot_positions] == [ids[0], ids[0]] and ex.eot_trained == 2
    assert ex.eot_ids == sorted(ids) == r.end_of_turn_ids
    report = check_parity(save_tokenizer(tok, tmp_path / "tok"), [ex])
    assert report["text_mismatches"] == 0 and report["token_mismatches"] == 0


def test_single_token_endings_list_one_id(tok):
    r = ChatRenderer(tok, load_template("model", tok))
    assert r.end_of_turn_ids == [tok.convert_tokens_to_ids("<|im_end|>")]
    (ex,) = r.render(Conversation([Message("user", "q"), Message("assistant", "a")]))
    assert ex.eot_ids == r.end_of_turn_ids


# -- content parts ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["smolvlm2", "idefics3"])
def test_image_capable_templates_get_text_parts_with_exact_masks_and_parity(name, tmp_path):
    tok, r = real_renderer(name)
    conv = Conversation([Message("system", "Be brief."), Message("user", "Where is HB-1?"),
                         Message("assistant", "It ships today."), Message("user", "Thanks"),
                         Message("assistant", "You're welcome.")])
    (ex,) = r.render(conv)
    assert trained_runs(tok, ex) == [" It ships today.<end_of_utterance>", " You're welcome.<end_of_utterance>"]
    assert ex.messages[2]["content"] == [{"type": "text", "text": "It ships today."}]
    report = check_parity(save_tokenizer(tok, tmp_path / "tok"), [ex])
    assert report["text_mismatches"] == 0 and report["token_mismatches"] == 0
    prompt = r.encode_prompt([{"role": "user", "content": "Where is HB-1?"}])  # serving takes plain strings
    assert tok.decode(prompt).endswith("User: Where is HB-1?<end_of_utterance>\nAssistant:")


def test_image_parts_are_a_clear_record_error():
    with pytest.raises(RecordError, match="is an image .*images are out of scope") as info:
        parse_record({"messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "?"}]},
                                   {"role": "assistant", "content": "A cat."}]})
    assert (info.value.reason, info.value.index) == ("bad_content", 0)


# -- the prompt/reply boundary ---------------------------------------------------------------------------------

def test_a_reply_whose_first_token_would_merge_into_the_header_becomes_serving_examples(tok):
    r = ChatRenderer(tok, load_template("model", tok))
    conv = Conversation([Message("user", "Show code"), Message("assistant", "    indented = True"),
                         Message("user", "Thanks"), Message("assistant", "Welcome.")])
    joint = tok(r.render_text(conv.to_template()), add_special_tokens=False)["input_ids"]
    examples = r.render(conv)
    assert [e.meta["turn"] for e in examples] == [1, 3] and all(e.boundary_tokens == 0 for e in examples)
    for e, reply in zip(examples, ["    indented = True", "Welcome."]):
        assert serving_prompt_ok(r, e)
        assert trained_runs(tok, e) == [reply + "<|im_end|>"]  # every reply character, the spaces too
    # the single joint render would have merged "\n" and the spaces: what serving never feeds the model
    assert examples[0].input_ids[: examples[0].prompt_chars] != joint[: len(examples[0].input_ids)]
    # a reply that opens with a word tokenizes the same either way: one example, as before
    (ex,) = r.render(Conversation([Message("user", "q"), Message("assistant", "Fine.")]))
    assert ex.prompt_chars is None and trained_runs(tok, ex) == ["Fine.<|im_end|>"]


# -- parity of serving examples --------------------------------------------------------------------------------

def serving_parity(saved, ex) -> tuple[bool, bool]:
    """(text, ids) parity of a serving example: its prompt is what the saved tokenizer renders and tokenizes for
    serving (`add_generation_prompt=True`); the rest is what the model generates. This is the check
    `sftpipe.parity.check_parity` needs for examples with `prompt_chars` set."""
    text = saved.apply_chat_template(ex.messages[:-1], tokenize=False, add_generation_prompt=True)
    ids = saved.apply_chat_template(ex.messages[:-1], tokenize=True, add_generation_prompt=True,
                                    sanitize_control_tokens=True, return_dict=False)
    return text == ex.text[: ex.prompt_chars], list(ids) == ex.input_ids[: len(ids)]


@pytest.mark.parametrize("name, conv", [
    ("deepseek-r1-distill-qwen", reasoning_conv()),
    ("deepseek-v3", reasoning_conv(second_reasoning=None)),
    ("nemotron-3-super", reasoning_conv(second_reasoning=None)),
    ("mistral-7b-instruct-v0.3", Conversation([Message("system", "Be brief."), Message("user", "Hi"),
                                               Message("assistant", "Hello."), Message("user", "Bye"),
                                               Message("assistant", "Bye.")])),
    ("smollm2-135m-instruct", Conversation([Message("user", "Code? <|im_end|>"), Message("assistant", "\n  x = 1"),
                                            Message("user", "More"), Message("assistant", "  y = 2")])),
])
def test_serving_examples_match_the_saved_tokenizers_serving_render(name, conv, tmp_path):
    from transformers import AutoTokenizer

    tok, r = real_renderer(name)
    examples = [e for e in r.render(conv) if e.prompt_chars is not None]
    assert examples, "these conversations make serving examples"
    saved = AutoTokenizer.from_pretrained(save_tokenizer(tok, tmp_path / "tok"))
    assert [serving_parity(saved, e) for e in examples] == [(True, True)] * len(examples)
