"""Template oracle: for every template under tests/assets/templates, what the model must learn to generate is derived
here, independently of sftpipe's renderer, from transformers' own `apply_chat_template` texts with and without
`add_generation_prompt`, and compared with sftpipe's labels token run by token run. Every family is either exact on
every conversation or refused with a reason named in REFUSALS.

The derivation, per trained assistant message i (P = render(messages[:i], generation prompt),
U = render(messages[:i+1])):
- U starts with P: the model generates U[len(P):], up to and including the turn ending (the first control token after
  the reply and any control tokens directly after it).
- P ends in a think opening (`<think>\\n`) that U lacks: the model generates the reasoning, then the reply. If the
  template shows a final reply's `reasoning_content`, in its layout (an empty reasoning where the reply has none);
  otherwise (DeepSeek R1/V3 drop reasoning from every reply) as `{reasoning}\\n</think>\\n\\n{reply}`.
- otherwise the template renders history unlike serving (Mistral v0.3 moves the system prompt): the model generates
  what U writes after its last control token before the reply.
The tokens before each trained run must be exactly the serving prompt's ids, `encode(P)`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sftpipe.conversation import Conversation, Message
from sftpipe.errors import RecordError
from sftpipe.models import load_tokenizer
from sftpipe.render import ChatRenderer
from sftpipe.templates import load_template

ASSETS = Path(__file__).parent / "assets" / "templates"
TOKENS = json.loads((ASSETS / "tokens.json").read_text(encoding="utf-8"))
FAMILIES = sorted(p.stem for p in ASSETS.glob("*.jinja"))
THINK = "<think>\n"

SYSTEM = ("system", "You are Harbor Support. Be brief.")
CONVERSATIONS = {
    "support": [SYSTEM, ("user", "Where is order HB-123456?"), ("assistant", "Order HB-123456 ships today."),
                ("user", "And the refund?"), ("assistant", "Refunds take up to 5 business days, never instantly.")],
    "one_turn": [("user", "Hi"), ("assistant", "Hello! How can I help?")],
    "four_turns": [x for k in range(4) for x in (("user", f"Question {k}?"), ("assistant", f"Answer {k}."))],
    "whitespace": [("user", "  spaced question  "), ("assistant", "  indented reply\n  with a second line  "),
                   ("user", "tabs\tand\nnewlines"), ("assistant", "\nstarts with a newline")],
    "unicode": [SYSTEM, ("user", "Grüße aus Köln 👋"), ("assistant", "Ça marche — 東京 ✓ 🙂"),
                ("user", "¿Y ahora?"), ("assistant", "Sí. Ελληνικά too.")],
    "reasoning": [SYSTEM, ("user", "2+2?"), ("assistant", "4.", "Add two and two."),
                  ("user", "And 3+3?"), ("assistant", "6.", "Three plus three\nis six.")],
    "some_reasoning": [("user", "2+2?"), ("assistant", "4.", "Add them."), ("user", "Thanks"),
                       ("assistant", "You're welcome.")],
    "inline_reasoning": [("user", "Is it raining?"), ("assistant", "<think>\nCheck the sky.\n</think>\n\nYes."),
                         ("user", "Still?"), ("assistant", "<think>\nLook again.\n</think>\n\nNo.")],
}
NO_SYSTEM_ROLE = {"gemma-2-2b-it"}
# Families whose templates neither render reasoning_content nor open a think block in the serving prompt.
NO_REASONING = {"cohere2", "gemma-2-2b-it", "idefics3", "llama3.1-8b-instruct", "mistral-7b-instruct-v0.3",
                "phi-3-mini-4k-instruct", "qwen2.5-7b-instruct", "smollm2-135m-instruct", "smolvlm2"}


def refusal(family: str, conv: str, mode: str) -> tuple[str, str] | None:
    """(reason, message pattern) when sftpipe must refuse this conversation for this family, else None."""
    if family in NO_REASONING and mode == "keep" and conv in ("reasoning", "some_reasoning"):
        # the reasoning would vanish without a trace; render.reasoning: empty trains the replies alone
        return "reasoning_not_rendered", "neither renders reasoning_content nor opens a think block"
    if family in NO_SYSTEM_ROLE and CONVERSATIONS[conv][0] == SYSTEM:
        return "template_rejected", "System role not supported"  # Gemma 2 raises on a system message
    return None


def family_tokenizer(name: str):
    """The SmolLM2 tokenizer given the family's control tokens and bos/eos, like the model's own tokenizer."""
    tok = load_tokenizer("smollm2-135m-instruct")
    info = TOKENS[name]
    tok.add_special_tokens({"additional_special_tokens": info["control"]}, replace_extra_special_tokens=False)
    for attr in ("bos", "eos"):
        if info[attr]:
            setattr(tok, f"{attr}_token", info[attr])
    return tok


class Oracle:
    """The expected serving prompt and generated text of each trained reply, from transformers' renders."""

    def __init__(self, name: str, tok):
        self.source = (ASSETS / f"{name}.jinja").read_text(encoding="utf-8")
        self.tok = tok
        self.control = sorted(set(TOKENS[name]["control"]) | {tok.eos_token}, key=len, reverse=True)
        probe = [{"role": "user", "content": "\x00hi"}]
        self.parts = "\x00hi" not in self.render(probe)
        self.think_prompt = self.render(probe, True).endswith(THINK)
        shown = self.render(probe + [{"role": "assistant", "content": "ok", "reasoning_content": "\x00R"}])
        self.shows_reasoning = "\x00R" in shown
        self.knows_reasoning = self.think_prompt or self.shows_reasoning

    def render(self, messages: list[dict], gen: bool = False) -> str:
        if getattr(self, "parts", False):
            messages = [{**m, "content": [{"type": "text", "text": m["content"]}]} for m in messages]
        return self.tok.apply_chat_template(messages, chat_template=self.source, tokenize=False,
                                            add_generation_prompt=gen)

    def messages(self, conv: list[tuple], mode: str) -> list[dict]:
        """The conversation as template messages: reasoning per `mode`, a leading think block split off for
        templates that know reasoning."""
        out = []
        for role, content, *reasoning in conv:
            m = {"role": role, "content": content}
            if role == "assistant" and self.knows_reasoning and not reasoning and content.startswith("<think>"):
                inner, content = content.split("</think>", 1)
                m["content"], reasoning = content.lstrip("\n"), [inner.removeprefix("<think>").strip("\n")]
            if reasoning and mode == "keep":
                m["reasoning_content"] = m["thinking"] = reasoning[0]
            out.append(m)
        return out

    def ending(self, text: str, after: int) -> int:
        """Where the turn ending that follows `after` ends: the first control token and those right behind it."""
        starts = [(text.find(t, after), t) for t in self.control if text.find(t, after) >= 0]
        pos, token = min(starts, key=lambda x: (x[0], -len(x[1])))
        end = pos + len(token)
        while (nxt := next((t for t in self.control if text.startswith(t, end)), None)) is not None:
            end += len(nxt)
        return end

    def expected(self, msgs: list[dict], i: int) -> tuple[str, str, str]:
        """(serving prompt, generated text through the turn ending, the turn ending) of assistant message i."""
        prompt = self.render(msgs[:i], True)
        upto = self.render(msgs[: i + 1])
        reasoning = msgs[i].get("reasoning_content", "")
        if self.think_prompt and not (upto.startswith(prompt) and reasoning):
            if self.shows_reasoning:
                marked = {**msgs[i], "reasoning_content": "\x00R", "thinking": "\x00R"}
                gen = self.render(msgs[:i] + [marked]).replace("\x00R", reasoning)
                assert gen.startswith(prompt), "the think block does not continue the serving prompt"
                gen = gen[len(prompt):]
            else:
                head = prompt.removesuffix(THINK)
                assert upto.startswith(head), "history and serving prompt disagree before the reply"
                gen = reasoning + "\n</think>\n\n" + upto[len(head):]
        elif upto.startswith(prompt):
            gen = upto[len(prompt):]
        else:
            reply_at = upto.rfind(msgs[i]["content"].strip())
            gen = upto[max(upto.rfind(t, 0, reply_at) + len(t) for t in self.control if t in upto[:reply_at]):]
        reply_end = gen.rfind(msgs[i]["content"].strip()) + len(msgs[i]["content"].strip())
        end = self.ending(gen, reply_end)
        return prompt, gen[:end], gen[reply_end:end].strip()


def trained_runs(ex) -> list[tuple[int, list[int]]]:
    """(first index, ids) of each run of consecutive trained tokens."""
    runs: list[tuple[int, list[int]]] = []
    for k, (tid, lab) in enumerate(zip(ex.input_ids, ex.labels)):
        if lab == -100:
            continue
        assert lab == tid
        if runs and runs[-1][0] + len(runs[-1][1]) == k:
            runs[-1][1].append(tid)
        else:
            runs.append((k, [tid]))
    return runs


def check(name: str, conv_name: str, mode: str) -> str:
    """Render one conversation with sftpipe and compare it with the oracle; returns 'exact' or the refusal."""
    tok = family_tokenizer(name)
    renderer = ChatRenderer(tok, load_template(str(ASSETS / f"{name}.jinja"), tok), reasoning=mode)
    oracle = Oracle(name, tok)
    data = CONVERSATIONS[conv_name]
    conv = Conversation([Message(r, c, reasoning_content=(rest[0] if rest else None)) for r, c, *rest in data],
                        {"id": conv_name})
    expected_refusal = refusal(name, conv_name, mode)
    if expected_refusal is not None:
        reason, pattern = expected_refusal
        with pytest.raises(RecordError, match=pattern) as info:
            renderer.render(conv)
        assert info.value.reason == reason
        return reason
    examples = renderer.render(conv)
    msgs = oracle.messages(data, mode)
    trained = [i for i, m in enumerate(msgs) if m["role"] == "assistant"]
    # one example over the whole conversation, or one per trained turn (meta "turn")
    located = ([(examples[0], k) for k in range(len(trained))] if len(examples) == 1 and len(trained) > 1 else
               [(ex, 0) for ex in examples])
    assert len(located) == len(trained), f"{name}/{conv_name}: {len(examples)} examples for {len(trained)} turns"
    for (ex, k), i in zip(located, trained):
        assert ex.meta.get("turn", i) == i
        prompt, gen, ending = oracle.expected(msgs, i)
        runs = trained_runs(ex)
        assert len(runs) == (len(trained) if len(examples) == 1 else 1), f"{name}/{conv_name}: stray trained tokens"
        first, ids = runs[k]
        assert tok.decode(ids, clean_up_tokenization_spaces=False) == gen, (name, conv_name, i)
        # the tokens before the reply are exactly what serving feeds the model
        assert ex.input_ids[:first] == tok.encode(prompt, add_special_tokens=False), (name, conv_name, i)
        # every control token of the turn ending is listed for the generation config's eos
        assert set(tok.encode(ending, add_special_tokens=False)) <= set(ex.eot_ids), (name, ending, ex.eot_ids)
    return "exact"


@pytest.mark.parametrize("name", FAMILIES)
def test_oracle_agrees_with_sftpipe_on_every_family(name):
    outcomes = {}
    for conv_name in CONVERSATIONS:
        for mode in ("keep", "empty") if conv_name.endswith("reasoning") else ("keep",):
            outcomes[conv_name, mode] = check(name, conv_name, mode)
    exact = [k for k, v in outcomes.items() if v == "exact"]
    assert len(exact) >= 6, f"{name}: exact on too few conversations: {outcomes}"


@pytest.mark.parametrize("name", FAMILIES)
def test_no_reasoning_list_matches_the_templates(name):
    """NO_REASONING (the refusal list) is what rendering the template shows, not a guess."""
    oracle = Oracle(name, family_tokenizer(name))
    assert (name in NO_REASONING) == (not oracle.knows_reasoning)
