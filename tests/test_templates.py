"""Built-in templates (exact text, generation prompt, prefix stability, end-of-turn), template loading,
control-token detection, tokenizer preparation, and real model templates rendered with the SmolLM2 tokenizer."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import jinja2
import pytest
from transformers import AutoTokenizer

import sftpipe.templates as templates_pkg
from sftpipe.errors import TemplateError
from sftpipe.models import load_tokenizer
from sftpipe.templates import Template, builtin_names, control_tokens_of, load_template, prepare_tokenizer

ASSETS = Path(__file__).parent / "assets" / "templates"
TOKENS = json.loads((ASSETS / "tokens.json").read_text(encoding="utf-8"))
ASSET_NAMES = sorted(p.stem for p in ASSETS.glob("*.jinja"))

SYSTEM = {"role": "system", "content": "Be brief."}
CONV = [SYSTEM,
        {"role": "user", "content": "Where is order 7?"},
        {"role": "assistant", "content": "It ships today."},
        {"role": "user", "content": "Thanks!"},
        {"role": "assistant", "content": "You're welcome."}]

# bos/eos each family's models use; passed to the renderer so the expected strings read like the real thing
SPECIAL = {
    "alpaca": {"bos_token": "<s>", "eos_token": "</s>"},
    "chatml": {"bos_token": "<s>", "eos_token": "</s>"},
    "gemma": {"bos_token": "<bos>", "eos_token": "<eos>"},
    "llama3": {"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>"},
    "mistral": {"bos_token": "<s>", "eos_token": "</s>"},
    "phi3": {"bos_token": "<s>", "eos_token": "<|endoftext|>"},
    "zephyr": {"bos_token": "<s>", "eos_token": "</s>"},
}
END_OF_TURN = {"alpaca": "</s>", "chatml": "<|im_end|>", "gemma": "<end_of_turn>", "llama3": "<|eot_id|>",
               "mistral": "</s>", "phi3": "<|end|>", "zephyr": "</s>"}
GENERATION_PROMPT = {"alpaca": "### Response:\n", "chatml": "<|im_start|>assistant\n",
                     "gemma": "<start_of_turn>model\n", "llama3": "<|start_header_id|>assistant<|end_header_id|>\n\n",
                     "mistral": "[/INST]", "phi3": "<|assistant|>\n", "zephyr": "<|assistant|>\n"}
EXPECTED = {
    "alpaca": "<s>Be brief.\n\n### Instruction:\nWhere is order 7?\n\n### Response:\nIt ships today.</s>"
              "\n\n### Instruction:\nThanks!\n\n### Response:\nYou're welcome.</s>",
    "chatml": "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhere is order 7?<|im_end|>\n"
              "<|im_start|>assistant\nIt ships today.<|im_end|>\n<|im_start|>user\nThanks!<|im_end|>\n"
              "<|im_start|>assistant\nYou're welcome.<|im_end|>\n",
    "gemma": "<bos><start_of_turn>user\nBe brief.\n\nWhere is order 7?<end_of_turn>\n<start_of_turn>model\n"
             "It ships today.<end_of_turn>\n<start_of_turn>user\nThanks!<end_of_turn>\n<start_of_turn>model\n"
             "You're welcome.<end_of_turn>\n",
    "llama3": "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
              "<|start_header_id|>user<|end_header_id|>\n\nWhere is order 7?<|eot_id|>"
              "<|start_header_id|>assistant<|end_header_id|>\n\nIt ships today.<|eot_id|>"
              "<|start_header_id|>user<|end_header_id|>\n\nThanks!<|eot_id|>"
              "<|start_header_id|>assistant<|end_header_id|>\n\nYou're welcome.<|eot_id|>",
    "mistral": "<s>[INST] Be brief.\n\nWhere is order 7?[/INST] It ships today.</s>[INST] Thanks![/INST] "
               "You're welcome.</s>",
    "phi3": "<|system|>\nBe brief.<|end|>\n<|user|>\nWhere is order 7?<|end|>\n<|assistant|>\nIt ships today.<|end|>\n"
            "<|user|>\nThanks!<|end|>\n<|assistant|>\nYou're welcome.<|end|>\n",
    "zephyr": "<|system|>\nBe brief.</s>\n<|user|>\nWhere is order 7?</s>\n<|assistant|>\nIt ships today.</s>\n"
              "<|user|>\nThanks!</s>\n<|assistant|>\nYou're welcome.</s>\n",
}
# control tokens each built-in writes literally (no tokenizer given), in order of first appearance
LITERAL_CONTROL = {"alpaca": (), "chatml": ("<|im_start|>", "<|im_end|>"),
                   "gemma": ("<start_of_turn>", "<end_of_turn>"),
                   "llama3": ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
                   "mistral": ("[INST]", "[/INST]"), "phi3": ("<|system|>", "<|end|>", "<|user|>", "<|assistant|>"),
                   "zephyr": ("<|system|>", "<|user|>", "<|assistant|>")}
TOOL_FAMILIES = {"chatml", "llama3"}


@pytest.fixture(scope="module")
def ro_tok():
    """One SmolLM2 tokenizer shared by the tests that only load and render (they must not change it)."""
    return load_tokenizer("smollm2-135m-instruct")


def render(tok, template: str | Template, messages, *, gen: bool = False, **special) -> str:
    source = template.source if isinstance(template, Template) else template
    return tok.apply_chat_template(messages, chat_template=source, tokenize=False, add_generation_prompt=gen,
                                   **special)


def stability_problems(tok, source: str, messages, **special) -> list[str]:
    """Where rendering is not prefix-stable: a shorter render, or a generation prompt, that the longer render
    does not start with."""
    full = render(tok, source, messages, **special)
    problems = [f"messages[:{k}]" for k in range(1, len(messages))
                if not full.startswith(render(tok, source, messages[:k], **special))]
    for k, m in enumerate(messages):
        if m["role"] == "assistant":
            prompt = render(tok, source, messages[:k], gen=True, **special)
            if not render(tok, source, messages[: k + 1], **special).startswith(prompt):
                problems.append(f"generation prompt before message {k}")
    return problems


# -- built-ins -----------------------------------------------------------------------------------------------

def test_builtin_names_are_the_seven_families():
    assert builtin_names() == ["alpaca", "chatml", "gemma", "llama3", "mistral", "phi3", "zephyr"]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_builtin_renders_the_expected_text(ro_tok, name):
    t = load_template(name, ro_tok)
    assert t.name == name
    assert t.sha256 == hashlib.sha256(t.source.encode("utf-8")).hexdigest()
    assert render(ro_tok, t, CONV, **SPECIAL[name]) == EXPECTED[name]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_builtin_generation_prompt_is_the_assistant_header(ro_tok, name):
    t = load_template(name, ro_tok)
    prompt = CONV[:4]
    assert render(ro_tok, t, prompt, gen=True, **SPECIAL[name]) == \
        render(ro_tok, t, prompt, **SPECIAL[name]) + GENERATION_PROMPT[name]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_builtin_is_prefix_stable_and_closes_each_reply(ro_tok, name):
    t = load_template(name, ro_tok)
    conv = CONV + [{"role": "user", "content": "One more?"}, {"role": "assistant", "content": "Sure: 42."}]
    assert stability_problems(ro_tok, t.source, conv, **SPECIAL[name]) == []
    for k, m in enumerate(conv):
        if m["role"] == "assistant":
            before = render(ro_tok, t, conv[:k], gen=True, **SPECIAL[name])
            reply = render(ro_tok, t, conv[: k + 1], **SPECIAL[name])[len(before):]
            # what the model generates: the reply (Mistral puts a space first), then the end-of-turn token
            assert reply.removeprefix(" ").startswith(m["content"] + END_OF_TURN[name]), reply


@pytest.mark.parametrize("name", sorted(set(EXPECTED) - TOOL_FAMILIES))
def test_builtin_without_tool_support_rejects_tool_messages(ro_tok, name):
    t = load_template(name, ro_tok)
    conv = CONV[:3] + [{"role": "tool", "content": "{}"}]
    with pytest.raises(jinja2.TemplateError, match=f"the {name} built-in .*not 'tool'"):
        render(ro_tok, t, conv, **SPECIAL[name])
    call = {"type": "function", "function": {"name": "lookup", "arguments": {"id": 7}}}
    with pytest.raises(jinja2.TemplateError, match="does not render tool_calls"):
        render(ro_tok, t, CONV[:2] + [{"role": "assistant", "content": "", "tool_calls": [call]}], **SPECIAL[name])


def test_chatml_and_llama3_render_tool_calls_and_results(ro_tok):
    call = {"type": "function", "function": {"name": "lookup", "arguments": {"id": 7}}}
    conv = [{"role": "user", "content": "Order 7?"}, {"role": "assistant", "content": "", "tool_calls": [call]},
            {"role": "tool", "content": '{"status": "shipped"}'}, {"role": "assistant", "content": "Shipped."}]
    assert render(ro_tok, load_template("chatml", ro_tok), conv) == (
        "<|im_start|>user\nOrder 7?<|im_end|>\n"
        '<|im_start|>assistant\n<tool_call>\n{"name": "lookup", "arguments": {"id": 7}}\n</tool_call><|im_end|>\n'
        '<|im_start|>tool\n{"status": "shipped"}<|im_end|>\n<|im_start|>assistant\nShipped.<|im_end|>\n')
    assert render(ro_tok, load_template("llama3", ro_tok), conv, bos_token="<|begin_of_text|>") == (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nOrder 7?<|eot_id|>"
        '<|start_header_id|>assistant<|end_header_id|>\n\n{"name": "lookup", "parameters": {"id": 7}}<|eot_id|>'
        '<|start_header_id|>ipython<|end_header_id|>\n\n{"status": "shipped"}<|eot_id|>'
        "<|start_header_id|>assistant<|end_header_id|>\n\nShipped.<|eot_id|>")


@pytest.mark.parametrize("name", ["alpaca", "gemma", "mistral"])
def test_builtin_rejects_roles_that_do_not_alternate(ro_tok, name):
    t = load_template(name, ro_tok)
    with pytest.raises(jinja2.TemplateError, match="alternate"):
        render(ro_tok, t, [SYSTEM, {"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
               **SPECIAL[name])


@pytest.mark.parametrize("name", ["alpaca", "mistral", "zephyr"])
def test_builtin_that_ends_replies_with_eos_requires_one(ro_tok, name):
    with pytest.raises(jinja2.TemplateError, match="needs eos_token"):
        render(ro_tok, load_template(name, ro_tok), CONV, bos_token="<s>", eos_token="")


@pytest.mark.parametrize("name", sorted(LITERAL_CONTROL))
def test_builtin_control_tokens(ro_tok, name):
    source = load_template(name, ro_tok).source
    assert control_tokens_of(source) == LITERAL_CONTROL[name]
    # with the tokenizer, its bos/eos join when the template writes bos_token / eos_token
    uses = {"alpaca": "be", "gemma": "b", "llama3": "b", "mistral": "be", "zephyr": "e"}.get(name, "")
    specials = {ro_tok.bos_token} if "b" in uses else set()
    specials |= {ro_tok.eos_token} if "e" in uses else set()
    assert set(load_template(name, ro_tok).control_tokens) == set(LITERAL_CONTROL[name]) | specials


# -- control_tokens_of ---------------------------------------------------------------------------------------

def test_control_tokens_come_from_strings_not_comments_or_content(tok):
    src = ("{#- <|ignored|> -#}{% for m in messages %}{{ '<|turn|>' + m.content }}<think>{% endfor %}"
           "{% if add_generation_prompt %}[BOT]{% endif %}")
    assert control_tokens_of(src) == ("<|turn|>", "[BOT]")
    tok.add_tokens(["<think>"])  # an added (non-special) token, like Qwen3's
    assert control_tokens_of(src, tok) == ("<|turn|>", "<think>", "[BOT]")


# -- load_template -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec", [None, "model"])
def test_load_model_template(ro_tok, spec):
    t = load_template(spec, ro_tok)
    assert (t.name, t.source) == ("model", ro_tok.chat_template)
    assert t.sha256 == hashlib.sha256(ro_tok.chat_template.encode("utf-8")).hexdigest()
    assert t.control_tokens == ("<|im_start|>", "<|im_end|>")


def test_model_without_template_names_the_builtins(tok):
    tok.chat_template = None
    with pytest.raises(TemplateError, match="no chat template") as info:
        load_template("model", tok)
    assert all(name in str(info.value) for name in builtin_names())


def test_named_model_templates_use_default(tok):
    tok.chat_template = {"default": "{{ 'A' }}{% if add_generation_prompt %}B{% endif %}", "tool_use": "{{ 'T' }}"}
    assert load_template("model", tok).source.startswith("{{ 'A' }}")
    tok.chat_template = {"tool_use": "{{ 'T' }}"}
    with pytest.raises(TemplateError, match="tool_use.*none is 'default'"):
        load_template("model", tok)


def test_load_builtin_reads_the_package_file(ro_tok):
    path = Path(templates_pkg.__file__).parent / "gemma.jinja"
    assert load_template("gemma", ro_tok).source == path.read_text(encoding="utf-8")


def test_load_jinja_file(ro_tok, tmp_path):
    path = tmp_path / "mine.jinja"
    path.write_text("{% for m in messages %}<|x|>{{ m.content }}{% endfor %}", encoding="utf-8")
    t = load_template(str(path), ro_tok)
    assert (t.name, t.source, t.control_tokens) == (str(path), path.read_text(encoding="utf-8"), ("<|x|>",))


def test_load_tokenizer_config_json_and_folder(tok, tmp_path):
    config = tmp_path / "tokenizer_config.json"
    config.write_text(json.dumps({"chat_template": [{"name": "default", "template": "{{ 'D' }}"},
                                                    {"name": "rag", "template": "{{ 'R' }}"}]}), encoding="utf-8")
    assert load_template(str(config), tok).source == "{{ 'D' }}"
    assert load_template(str(tmp_path), tok).source == "{{ 'D' }}"  # folder without chat_template.jinja
    saved = tmp_path / "saved"
    tok.save_pretrained(saved)  # transformers 5 writes chat_template.jinja next to tokenizer_config.json
    assert load_template(str(saved), tok).source == tok.chat_template
    config.write_text(json.dumps({"bos_token": "<s>"}), encoding="utf-8")
    with pytest.raises(TemplateError, match="has no chat_template"):
        load_template(str(config), tok)


def test_unknown_template_lists_the_choices(ro_tok):
    with pytest.raises(TemplateError) as info:
        load_template("llama-2", ro_tok)
    msg = str(info.value)
    assert "'llama-2'" in msg and "or a path to a .jinja file" in msg
    assert all(name in msg for name in builtin_names())


def test_invalid_jinja_is_reported_with_its_line(ro_tok, tmp_path):
    path = tmp_path / "broken.jinja"
    path.write_text("{% for m in messages %}\n{{ m.content }", encoding="utf-8")
    with pytest.raises(TemplateError, match="not valid Jinja .line 2"):
        load_template(str(path), ro_tok)


# -- prepare_tokenizer ---------------------------------------------------------------------------------------

def test_prepare_adds_missing_control_tokens_as_single_special_tokens(tok, tmp_path):
    template = load_template("llama3", tok)
    size = len(tok)
    assert len(tok.encode("<|eot_id|>", add_special_tokens=False)) > 1
    added = prepare_tokenizer(tok, template)
    assert added == ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    assert len(tok) == size + 3 and tok.chat_template == template.source
    for token in added:
        (tid,) = tok.encode(token, add_special_tokens=False)
        assert tid >= size and token in tok.all_special_tokens
    text = render(tok, template, CONV[:3])
    assert tok.decode(tok.encode(text, add_special_tokens=False), skip_special_tokens=True).count("It ships") == 1
    # idempotent
    assert prepare_tokenizer(tok, template) == [] and len(tok) == size + 3
    # and it survives save/load, so the saved tokenizer renders and encodes exactly the same
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again.chat_template == template.source
    assert again.encode(text, add_special_tokens=False) == tok.encode(text, add_special_tokens=False)


def test_prepare_adds_nothing_when_the_tokenizer_has_every_token(tok):
    size = len(tok)
    assert prepare_tokenizer(tok, load_template("chatml", tok)) == []
    assert len(tok) == size


# -- real model templates ------------------------------------------------------------------------------------

def model_like(tok, entry):
    """The SmolLM2 tokenizer given the model's bos/eos and control tokens, like the model's own tokenizer."""
    tok.add_special_tokens({"extra_special_tokens": entry["control"]}, replace_extra_special_tokens=False)
    tok.add_special_tokens({k: entry[k[:3]] for k in ("bos_token", "eos_token") if entry[k[:3]]})
    return tok


# Image-capable templates read content as a list of parts, even for text-only chat
PARTS = {"smolvlm2", "idefics3"}


def asset_conv(name):
    conv = CONV[1:] if name.startswith("gemma") else CONV  # Gemma 2 has no system role
    if name in PARTS:
        conv = [{**m, "content": [{"type": "text", "text": m["content"]}]} for m in conv]
    return conv


def content_of(message) -> str:
    return message["content"] if isinstance(message["content"], str) else message["content"][0]["text"]


def special_of(name):
    entry = TOKENS[name]
    return {f"{k}_token": entry[k] for k in ("bos", "eos") if entry[k]}


def test_every_asset_has_a_documented_source_and_token_list():
    sources = (ASSETS / "SOURCES.md").read_text(encoding="utf-8")
    assert len(ASSET_NAMES) >= 8 and set(ASSET_NAMES) == set(TOKENS) - {"_about"}
    for name in ASSET_NAMES:
        digest = hashlib.sha256((ASSETS / f"{name}.jinja").read_bytes()).hexdigest()
        assert f"`{name}.jinja` |" in sources and f"| {digest[:12]} |" in sources, name


@pytest.mark.parametrize("name", ASSET_NAMES)
def test_asset_renders_with_smollm2_after_prepare(tok, name):
    template = load_template(str(ASSETS / f"{name}.jinja"), tok)
    prepare_tokenizer(tok, template)
    text = render(tok, template, asset_conv(name), **special_of(name))
    for m in asset_conv(name)[1:]:
        assert content_of(m) in text
    ids = tok.encode(text, add_special_tokens=False)
    for token in template.control_tokens:
        assert len(tok.encode(token, add_special_tokens=False)) == 1
        assert tok.convert_tokens_to_ids(token) in ids or token not in text
    # found by shape alone, never a token the model itself lacks
    assert set(template.control_tokens) <= set(TOKENS[name]["control"]) | {tok.bos_token, tok.eos_token}


@pytest.mark.parametrize("name", ASSET_NAMES)
def test_asset_control_tokens_match_the_models_tokenizer(tok, name):
    tok = model_like(tok, TOKENS[name])
    assert set(load_template(str(ASSETS / f"{name}.jinja"), tok).control_tokens) == set(TOKENS[name]["control"])


# (honours add_generation_prompt, prefix-stable) as rendered; the lead's engine must cope with every False
ASSET_BEHAVIOUR = {
    "cohere2": (True, True),  # replies end in two control tokens: <|END_RESPONSE|><|END_OF_TURN_TOKEN|>
    "deepseek-r1-distill-qwen": (True, False),  # prompt ends "<think>\n", replies are rendered without it
    "deepseek-v3": (True, False),  # the same, as shipped by DeepSeek-R1
    "idefics3": (True, True),
    "nemotron-3-nano": (True, False),  # prompt ends "<think>\n", a reply without reasoning renders "<think></think>"
    "nemotron-3-super": (True, False),
    "nemotron-3-ultra": (True, False),
    "nemotron-3.5-lightning": (True, False),
    "smolvlm2": (True, True),
    "gemma-2-2b-it": (True, True),
    "llama3.1-8b-instruct": (True, True),
    "mistral-7b-instruct-v0.3": (False, False),  # no generation prompt; system only in a final user turn
    "phi-3-mini-4k-instruct": (True, False),  # eos_token after the last message
    "qwen2.5-7b-instruct": (True, True),
    "qwen3-8b": (True, False),  # a final reply gets an empty <think></think>, earlier ones don't
    "smollm2-135m-instruct": (True, True),
}


@pytest.mark.parametrize("name", ASSET_NAMES)
def test_asset_generation_prompt_and_prefix_stability(ro_tok, name):
    source = (ASSETS / f"{name}.jinja").read_text(encoding="utf-8")
    conv, special = asset_conv(name), special_of(name)
    prompt = conv[:-1]
    honours = render(ro_tok, source, prompt, gen=True, **special) != render(ro_tok, source, prompt, **special)
    stable = stability_problems(ro_tok, source, conv, **special) == []
    assert (honours, stable) == ASSET_BEHAVIOUR[name]


REASONING_CONV = [SYSTEM, {"role": "user", "content": "Q1"},
                  {"role": "assistant", "content": "<think>\nR1 first reasoning\n</think>\n\nA1"},
                  {"role": "user", "content": "Q2"},
                  {"role": "assistant", "content": "<think>\nR2 second reasoning\n</think>\n\nA2"}]


@pytest.mark.parametrize("name", ["qwen3-8b", "deepseek-r1-distill-qwen", "deepseek-v3"])
def test_reasoning_templates_drop_earlier_turns_reasoning(ro_tok, name):
    source = (ASSETS / f"{name}.jinja").read_text(encoding="utf-8")
    special = special_of(name)
    full = render(ro_tok, source, REASONING_CONV, **special)
    upto_first = render(ro_tok, source, REASONING_CONV[:3], **special)
    assert "A1" in full and "A2" in full
    assert "R1 first reasoning" not in full  # the earlier turn's reasoning is gone from the history
    if name == "qwen3-8b":
        # ... but shown while that reply is the latest, so the shorter render is not a prefix of the longer one
        assert "R1 first reasoning" in upto_first and not full.startswith(upto_first)
        assert "<think>\nR2 second reasoning\n</think>\n\nA2" in full
    else:
        # the R1 distills drop it from every reply, while the generation prompt opens "<think>\n"
        assert "R1 first reasoning" not in upto_first and "R2 second reasoning" not in full
        prompt = render(ro_tok, source, REASONING_CONV[:2], gen=True, **special)
        assert prompt.endswith("<｜Assistant｜><think>\n") and not upto_first.startswith(prompt)


def test_gemma2_rejects_a_system_message(ro_tok):
    source = (ASSETS / "gemma-2-2b-it.jinja").read_text(encoding="utf-8")
    with pytest.raises(jinja2.TemplateError, match="System role not supported"):
        render(ro_tok, source, CONV, **special_of("gemma-2-2b-it"))


def test_mistral_v03_drops_the_system_message_unless_the_last_message_is_a_user_turn(ro_tok):
    source = (ASSETS / "mistral-7b-instruct-v0.3.jinja").read_text(encoding="utf-8")
    special = special_of("mistral-7b-instruct-v0.3")
    assert "Be brief." not in render(ro_tok, source, CONV, **special)
    assert render(ro_tok, source, CONV[:4], **special).endswith("[INST] Be brief.\n\nThanks![/INST]")
