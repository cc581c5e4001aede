"""Conversation -> (input_ids, labels) with the model's own chat template, for ANY template.

Assistant spans come from the template itself, by incremental rendering: for each trained assistant message i,
`P = render(messages[:i], add_generation_prompt=True)` is what serving shows before the reply, and
`R = render(messages[:i + 1])` is the conversation up to the reply's end. Everything the model would generate
after `P`, up to and including the turn ending that closes the reply, is trained. Nothing else is: not the role
header, BOS, or any system, user or tool text. No `{% generation %}` tags needed. A turn ending is the first
control token after the reply and any control tokens right behind it (Cohere 2's
`<|END_RESPONSE|><|END_OF_TURN_TOKEN|>`), so it is trained through its last one; `Example.eot_ids` and
`ChatRenderer.end_of_turn_ids` list them all, for the generation config's eos (serving stops on the first).

If `R` is not a prefix of the full render, the template rewrites history (e.g. drops earlier turns' reasoning);
such a conversation is split into one example per trained turn, each exactly what serving would show.
Control-token strings inside content are encoded as plain text, exactly as transformers'
`apply_chat_template(..., sanitize_control_tokens=True)` does, so a user typing `<|im_end|>` cannot end a turn.
Templates that read content as a list of parts (SmolVLM, Idefics3) get `[{"type": "text", "text": ...}]`.

Reasoning (`reasoning_content`, or a reply opening with `<think>...</think>`; option keep | empty | refuse): when
the serving prompt opens a think block (DeepSeek-R1, DeepSeek-V3 and Nemotron 3 end it in `<think>\n`), the
trained text is what the model generates after it: the reasoning (empty when the reply has none, or under
`empty`), the closing tag, the reply and the turn ending. The layout is the template's own when it renders a final
reply's `reasoning_content` (Nemotron), else DeepSeek's `<think>\n{reasoning}\n</think>\n\n{reply}` (the R1
templates drop reasoning from every reply). These are "serving" examples: the serving prompt, then the generated
text, one per trained turn.

Prompt/reply boundary: the ids before a reply are exactly serving's, which tokenizes the prompt alone. Where the
joint render tokenizes the edge otherwise (a token straddling it: a reply opening with spaces after a header ending
in `\n`; or a header tail split differently, as a GPT-2 style tokenizer does with Llama 3's `\n\n` before a word),
that conversation becomes one serving example per trained turn: the prompt tokenized alone, then the generated text.
Text parity with `apply_chat_template` holds for those; token parity holds for the prompt, not the joint render.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
from transformers.utils.chat_template_utils import _CONTROL_TOKEN_END as _MARK_END
from transformers.utils.chat_template_utils import _CONTROL_TOKEN_START as _MARK_START
from transformers.utils.chat_template_utils import (
    _compile_jinja_template,
    _get_control_token_patterns,
    mark_control_tokens,
)

from .config import RenderConfig
from .conversation import Conversation
from .errors import RecordError, TemplateError
from .labels import IGNORE_INDEX
from .templates import Template, prepare_tokenizer

_SENTINEL = "\U000f0010sftpipe-reply\U000f0011"
_REASONING = "\U000f0010sftpipe-reasoning\U000f0011"
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
REASONING_MODES = ("keep", "empty", "refuse")
_REASONING_KEYS = ("reasoning_content", "thinking")


def split_inline_reasoning(content: str) -> tuple[str | None, str]:
    """A reply that opens with a think block -> (reasoning, reply), trimmed of newlines like Qwen3's template.

    >>> split_inline_reasoning("<think>\\nAdd them.\\n</think>\\n\\n4")
    ('Add them.', '4')
    >>> split_inline_reasoning("4")
    (None, '4')
    """
    if not content.lstrip().startswith(THINK_OPEN) or THINK_CLOSE not in content:
        return None, content
    inner, reply = content.split(THINK_CLOSE, 1)
    return inner.lstrip().removeprefix(THINK_OPEN).strip("\n"), reply.lstrip("\n")


def _unique(base: str, msgs: list[dict]) -> str:
    """`base`, lengthened until no message content contains it."""
    while any(base in str(m.get("content")) for m in msgs):
        base += "\U000f0012"
    return base


def _text_of(content: Any) -> str:
    """A message's content as text (text parts joined)."""
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content


@dataclass
class Example:
    """One rendered training example. `labels` is IGNORE_INDEX wherever the token is not trained."""

    input_ids: list[int]
    labels: list[int]
    text: str
    messages: list[dict] = field(default_factory=list)  # what the template rendered (for parity and serving)
    meta: dict[str, Any] = field(default_factory=dict)
    prompt_chars: int | None = None  # text = serving prompt (this many chars) + reply: checked against serving
    trained_messages: int = 0
    eot_positions: list[int] = field(default_factory=list)  # token index of each trained reply's end-of-turn
    boundary_tokens: int = 0  # reply edges tokenized unlike serving (0: such conversations become serving examples)
    escaped_control: bool = False
    eot_ids: list[int] = field(default_factory=list)  # ids of every control token in the trained turn endings
    truncated: bool = False  # cut to max_length, or rendered without its oldest turns

    @cached_property
    def n_trained(self) -> int:
        return len(self.labels) - self.labels.count(IGNORE_INDEX)

    @property
    def eot_trained(self) -> int:
        """How many trained replies keep their end-of-turn token (fewer only after truncation)."""
        return sum(1 for p in self.eot_positions if 0 <= p < len(self.labels) and self.labels[p] != IGNORE_INDEX)


@dataclass
class _Turn:
    """One trained reply: the text it sits in, its trained char span and where its end-of-turn token starts."""

    index: int
    text: str
    start: int
    end: int
    eot: int
    serving: bool  # text = serving prompt + reply, because the template renders this history differently
    pieces: list[tuple[str, bool]] | None = None  # serving: the text after the prompt as (piece, is_content)


@dataclass
class _Plan:
    """Text to tokenize, with the char spans to train (start, end, eot_start)."""

    text: str
    spans: list[tuple[int, int, int]]
    messages: list[dict]
    turn: int | None = None
    prompt_chars: int | None = None  # set when text = serving prompt + reply, tokenized apart (serving example)
    pieces: list[tuple[str, bool]] | None = None  # the text after the prompt as (piece, is_content)
    indices: list[int] = field(default_factory=list)  # the trained message of each span


class ChatRenderer:
    """Renders, tokenizes and masks conversations with one template and tokenizer."""

    def __init__(self, tokenizer, template: Template, *, train_on: str = "all_assistant", reasoning: str = "keep"):
        if train_on not in ("all_assistant", "last_assistant"):
            raise ValueError(f"train_on={train_on!r}; allowed: all_assistant, last_assistant")
        if reasoning not in REASONING_MODES:
            raise ValueError(f"reasoning={reasoning!r}; allowed: {', '.join(REASONING_MODES)}")
        self.tokenizer = tokenizer
        self.template = template
        self.train_on = train_on
        self.reasoning = reasoning
        self.added_tokens = prepare_tokenizer(tokenizer, template)
        # transformers' own sandboxed, compiled template and the variables apply_chat_template passes it
        self._compiled = _compile_jinja_template(template.source)
        self._variables = {**tokenizer.special_tokens_map, "tools": None, "documents": None}
        control = tokenizer._get_control_tokens(template.source)
        self._control_re, self._markers_re = _get_control_token_patterns(tuple(tokenizer.added_tokens_encoder))
        self._eot_re, _ = _get_control_token_patterns(tuple(control))
        self._newline_ids = tokenizer.encode("\n", add_special_tokens=False)
        self._special_ids = set(tokenizer.added_tokens_encoder.values())
        self._tail_ids: dict[str, list[int]] = {}  # prompt tail after a control token -> its ids, tokenized alone
        # (role before a reply) -> (header after the serving prompt, closing through end-of-turn, eot length)
        self._shapes: dict[str | None, tuple[str, str, int]] = {}
        # Image-capable templates (SmolVLM, Idefics3) read content as a list of parts, even for text-only chat.
        self._parts = False
        probe = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": _SENTINEL}]
        self._parts = _SENTINEL not in self._probe(probe) and _SENTINEL in self._probe(self._as_parts(probe))
        # Templates like Mistral's need no generation prompt ("[/INST]" ends the user turn); then nothing may stand
        # between the prompt and the reply, or the model would be trained to write its own role header.
        self._ignores_generation_prompt = self.render_text(probe[:1], add_generation_prompt=True) == \
            self.render_text(probe[:1])
        # Reasoning templates: the serving prompt opens a think block, and/or a final reply shows its reasoning.
        self._opens_think = self.render_text(probe[:1], add_generation_prompt=True).rstrip().endswith(THINK_OPEN)
        thought = {**probe[1], "content": "ok", **dict.fromkeys(_REASONING_KEYS, _REASONING)}
        self._renders_reasoning = _REASONING in self._probe([probe[0], thought])
        self._knows_reasoning = self._opens_think or self._renders_reasoning

    @classmethod
    def configured(cls, tokenizer, template: Template, render: RenderConfig) -> ChatRenderer:
        """A renderer with every option of a `render` section: the one way training, eval, serving and doctor
        build it, so a run is served with the options it was trained with."""
        return cls(tokenizer, template, train_on=render.train_on, reasoning=render.reasoning)

    # -- rendering -------------------------------------------------------------------------------------------
    def render_text(self, messages: list[dict], *, add_generation_prompt: bool = False,
                    tools: list[dict] | None = None) -> str:
        """The template's text for `messages` (and `tools`, as serving gets them), exactly as
        `tokenizer.apply_chat_template(tokenize=False)` gives it."""
        if self._parts:
            messages = self._as_parts(messages)
        variables = {**self._variables, "tools": tools} if tools else self._variables
        try:
            return self._compiled.render(messages=messages, add_generation_prompt=add_generation_prompt,
                                         **variables)
        except Exception as exc:  # jinja's TemplateError from raise_exception(), or a template bug
            raise self._template_failure(exc) from None

    def _template_failure(self, exc: Exception) -> Exception:
        """The error for a failed render, naming the template and its line: unsafe access (sandbox), an undefined
        variable, another template bug, or the template's own raise_exception() (a conversation it rejects)."""
        from jinja2.exceptions import SecurityError, UndefinedError

        line, tb = None, exc.__traceback__
        while tb is not None:  # jinja maps template frames to the template's own line numbers
            if tb.tb_frame.f_code.co_filename == "<template>":
                line = tb.tb_lineno
            tb = tb.tb_next
        where = f"template {self.template.name!r}" + (f" line {line}" if line else "")
        if isinstance(exc, SecurityError):
            return TemplateError(f"{where}: unsafe access blocked by the sandbox: {exc}; fix: remove it from the "
                                 "template (templates may read messages, tools and the special tokens only)")
        if isinstance(exc, UndefinedError):
            return RecordError("template_undefined", f"{where}: undefined variable: {exc}", field=None,
                               fix="define it in the template or guard it with `is defined`")
        if type(exc).__name__ != "TemplateError":  # raise_exception() raises jinja's TemplateError itself
            return RecordError("template_error", f"{where} fails: {type(exc).__name__}: {exc}", field=None,
                               fix="fix the template at that line or choose another template")
        return RecordError("template_rejected", f"{where} rejects this conversation: {exc}", field="role",
                           fix="fix the role order (e.g. alternate user/assistant) or choose a template that "
                               "accepts it")

    def _probe(self, messages: list[dict]) -> str:
        try:
            return self.render_text(messages)
        except RecordError:
            return ""

    @staticmethod
    def _as_parts(messages: list[dict]) -> list[dict]:
        """String contents as one text part, `[{"type": "text", "text": ...}]`, for templates that need parts."""
        return [{**m, "content": [{"type": "text", "text": m["content"]}]} if isinstance(m.get("content"), str)
                else m for m in messages]

    def template_messages(self, messages: list[dict]) -> list[dict]:
        """Messages as this template is given them: reasoning per the `reasoning` option (a leading think block in
        a reply becomes `reasoning_content` for templates that know reasoning) and content as parts if needed."""
        if not (self._knows_reasoning or self.reasoning == "empty"):
            return self._as_parts(messages) if self._parts else messages
        out = []
        for m in messages:
            if m["role"] == "assistant" and self._knows_reasoning and "reasoning_content" not in m and \
                    isinstance(m.get("content"), str):
                reasoning, reply = split_inline_reasoning(m["content"])
                if reasoning is not None:
                    m = {**m, "content": reply, **dict.fromkeys(_REASONING_KEYS, reasoning)}
            if self.reasoning == "empty" and "reasoning_content" in m:
                m = {k: v for k, v in m.items() if k not in _REASONING_KEYS}
            out.append(m)
        return self._as_parts(out) if self._parts else out

    @cached_property
    def end_of_turn_ids(self) -> list[int]:
        """Ids of every control token that ends an assistant turn (Cohere 2: `<|END_RESPONSE|>` and
        `<|END_OF_TURN_TOKEN|>`), probed on a one-exchange conversation; the generation config's eos must hold
        them all, so serving stops on the first one and training teaches the model to write through the last."""
        msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": _SENTINEL}]
        text = self._probe(msgs)
        if _SENTINEL not in text:
            return []
        closing = text.split(_SENTINEL, 1)[1]
        run = self._ending(closing)
        tokens = [m.group() for m in self._eot_re.finditer(closing[run[0]: run[1]])] if run else []
        return sorted({self.tokenizer.convert_tokens_to_ids(t) for t in tokens})

    def _trained_indices(self, conv: Conversation) -> list[int]:
        assistant = [i for i, m in enumerate(conv.messages) if m.role == "assistant"]
        default = set(assistant if self.train_on == "all_assistant" else assistant[-1:])
        return [i for i in assistant if (conv.messages[i].train if conv.messages[i].train is not None
                                         else i in default)]

    def _tail(self, text: str) -> str:
        """What follows the last control token of `text` (the end of a role header)."""
        ends = [m.end() for m in self._eot_re.finditer(text)]
        return text[ends[-1]:] if ends else text

    def _ending(self, closing: str) -> tuple[int, int] | None:
        """(start, end) in `closing` of the turn ending: the first control token and any that follow it directly.

        ChatML `<|im_end|>\\n` -> the `<|im_end|>`; Cohere 2 `<|END_RESPONSE|><|END_OF_TURN_TOKEN|>` -> both.
        """
        match = self._eot_re.search(closing)
        if match is None:
            return None
        end = match.end()
        while (more := self._eot_re.match(closing, end)) is not None:
            end = more.end()
        return match.start(), end

    @staticmethod
    def _shape_key(msgs: list[dict], i: int) -> str | None:
        return msgs[i - 1]["role"] if i else None

    def _known_turn(self, msgs: list[dict], i: int, full: str) -> _Turn | None:
        """Fast path: one render instead of three, when the full render literally holds the serving prompt
        followed by the header, content and end-of-turn text a previous probe of this template found."""
        shape = self._shapes.get(self._shape_key(msgs, i))
        if shape is None:
            return None
        header, closing, eot_len = shape
        prompt = self.render_text(msgs[:i], add_generation_prompt=True)
        reply = header + _text_of(msgs[i]["content"]) + closing
        if not (full.startswith(prompt) and full.startswith(reply, len(prompt))):
            return None
        end = len(prompt) + len(reply)
        return _Turn(i, full, len(prompt), end, end - eot_len, serving=False)

    def _no_ending(self, i: int) -> TemplateError:
        return TemplateError(f"template {self.template.name!r} does not close assistant message {i} with an "
                             "end-of-turn control token, so a model trained on it would never learn to stop; fix: "
                             "end assistant turns with eos_token or the template's end-of-turn token")

    def _turn(self, msgs: list[dict], i: int) -> _Turn:
        """Where assistant message i's generated text lies, rendered as history and as a serving reply."""
        name = self.template.name
        prompt = self.render_text(msgs[:i], add_generation_prompt=True)
        if self._opens_think and prompt.rstrip().endswith(THINK_OPEN) and not (
                self._renders_reasoning and msgs[i].get("reasoning_content")):
            return self._think_turn(msgs, i, prompt)
        upto = self.render_text(msgs[: i + 1])
        sentinel = _unique(_SENTINEL, msgs[: i + 1])
        probe = self.render_text(msgs[:i] + [{**msgs[i], "content": sentinel}])
        if sentinel not in probe:
            raise TemplateError(f"template {name!r} does not render the content of assistant message {i}; "
                                "fix: use a template that renders every assistant message")
        head, closing = probe.split(sentinel, 1)
        run = self._ending(closing)
        if not upto.startswith(head) or not upto.endswith(closing) or run is None:
            raise self._no_ending(i)
        reply = upto[len(head): len(upto) - len(closing)]
        if upto.startswith(prompt):
            header = head[len(prompt):]
            if self._ignores_generation_prompt and header.strip():
                raise TemplateError(f"template {name!r} ignores add_generation_prompt, so its assistant header "
                                    f"{header!r} is not in the serving prompt and would be trained; fix: add an "
                                    "add_generation_prompt branch that writes the assistant header")
            at = len(upto) - len(closing)
            if reply == _text_of(msgs[i]["content"]) and "reasoning_content" not in msgs[i]:
                self._shapes[self._shape_key(msgs, i)] = (header, closing[: run[1]], run[1] - run[0])
            return _Turn(i, upto, len(prompt), at + run[1], at + run[0], serving=False)
        lead = self._tail(head)
        if not lead.startswith(self._tail(prompt)):
            at = next((k for k, (a, b) in enumerate(zip(prompt, upto)) if a != b), min(len(prompt), len(upto)))
            raise TemplateError(f"template {name!r}: the generation prompt is not a prefix of the rendered "
                                f"assistant message {i} (serving shows {prompt[at:at + 24]!r} where training has "
                                f"{upto[at:at + 24]!r}), so training and serving would differ; fix: use a "
                                "template whose add_generation_prompt text matches its assistant header")
        # The history differs from the serving prompt (e.g. Mistral v0.3 shows the system prompt only in the
        # last user turn): train on exactly what serving shows, followed by what the model generates.
        return self._serving_turn(i, prompt, [(lead[len(self._tail(prompt)):], False), (reply, True)],
                                  closing, run)

    def _serving_turn(self, i: int, prompt: str, pieces: list[tuple[str, bool]], closing: str,
                      run: tuple[int, int]) -> _Turn:
        """The serving prompt followed by `pieces` and the turn ending (through its last control token)."""
        pieces = [p for p in pieces + [(closing[: run[1]], False)] if p[0]]
        text = prompt + "".join(p for p, _ in pieces)
        return _Turn(i, text, len(prompt), len(text), len(text) - (run[1] - run[0]), serving=True, pieces=pieces)

    def _think_turn(self, msgs: list[dict], i: int, prompt: str) -> _Turn:
        """A reply after a serving prompt that opens a think block: the reasoning (empty when the reply has
        none), the closing tag, the reply and the turn ending, as the model generates them."""
        m = msgs[i]
        reasoning = m.get("reasoning_content") or ""
        sentinel = _unique(_SENTINEL, msgs[: i + 1])
        if self._renders_reasoning:  # the template's own layout, e.g. Nemotron's "<think>\n{r}\n</think>\n{reply}"
            thought = _unique(_REASONING, msgs[: i + 1])
            marked = dict.fromkeys(_REASONING_KEYS, thought)
            probe = self.render_text(msgs[:i] + [{**m, **marked, "content": sentinel}])
            upto = self.render_text(msgs[:i] + [{**m, **marked}])
            before, _, after = probe.partition(thought)
            mid, _, closing = after.partition(sentinel)
            head = before + thought + mid
        else:  # the R1 templates drop reasoning from every reply: DeepSeek's layout
            probe = self.render_text(msgs[:i] + [{**m, "content": sentinel}])
            upto = self.render_text(msgs[: i + 1])
            head, _, closing = probe.partition(sentinel)
            before, mid = head + THINK_OPEN + "\n", "\n" + THINK_CLOSE + "\n\n"
        run = self._ending(closing)
        if sentinel not in probe or not upto.startswith(head) or not upto.endswith(closing) or run is None:
            raise self._no_ending(i)
        if not before.startswith(prompt):
            raise TemplateError(f"template {self.template.name!r}: the generation prompt ends in "
                                f"{prompt[-24:]!r}, which does not open the think block {before[-24:]!r} of "
                                f"assistant message {i}; fix: use a template whose generation prompt matches it")
        reply = upto[len(head): len(upto) - len(closing)]
        return self._serving_turn(i, prompt, [(before[len(prompt):], False), (reasoning, True), (mid, False),
                                              (reply, True)], closing, run)

    def _check_reasoning(self, conv: Conversation, msgs: list[dict], trained: list[int]) -> None:
        """Reasoning that would be dropped silently, or (`refuse`) a missing one, is a record error."""
        for i in trained:
            has = bool(msgs[i].get("reasoning_content"))
            if has and not self._knows_reasoning:
                raise RecordError("reasoning_not_rendered", f"{conv.label}: the reply has reasoning, but template "
                                  f"{self.template.name!r} neither renders reasoning_content nor opens a think "
                                  "block, so it would be dropped", index=i, field="reasoning_content",
                                  fix="set render.reasoning: empty to train the replies without it, or use the "
                                      "model's reasoning template")
            if not has and self.reasoning == "refuse" and self._opens_think:
                raise RecordError("no_reasoning", f"{conv.label}: the reply has no reasoning, and template "
                                  f"{self.template.name!r} opens a think block for every reply "
                                  "(render.reasoning: refuse)", index=i, field="reasoning_content",
                                  fix="add reasoning_content, or set render.reasoning: keep (an empty think block)")

    def plan(self, conv: Conversation) -> list[_Plan]:
        """The examples for one conversation (one per trained turn if the template rewrites history)."""
        msgs = self.template_messages(conv.to_template())
        trained = self._trained_indices(conv)
        if not trained:
            raise RecordError("no_trainable_tokens", f"{conv.label} has no trained assistant message (policy "
                              f"{self.train_on}, per-message train flags)", field="train",
                              fix="set train: true on an assistant message or drop the record")
        if self.reasoning != "empty":
            self._check_reasoning(conv, msgs, trained)
        full = self.render_text(msgs)
        known = not self._opens_think
        turns = [(known and self._known_turn(msgs, i, full)) or self._turn(msgs, i) for i in trained]
        if all(not t.serving and full.startswith(t.text[: t.end]) for t in turns):
            return [_Plan(full, [(t.start, t.end, t.eot) for t in turns], msgs, indices=trained)]
        return [_Plan(t.text, [(t.start, t.end, t.eot)], msgs[: t.index + 1], turn=t.index,
                      prompt_chars=t.start if t.serving else None, pieces=t.pieces, indices=[t.index])
                for t in turns]

    def _serving_plans(self, plan: _Plan) -> list[_Plan]:
        """A plan whose reply edge tokenizes unlike serving, as one serving example per trained turn: the prompt
        tokenized alone, as serving does, then the rest of the render after it."""
        out = []
        for (start, end, eot), i in zip(plan.spans, plan.indices):
            msgs = plan.messages[: i + 1]
            upto = plan.text if plan.turn is not None else self.render_text(msgs)
            pieces = [(upto[start:], False)]
            if self._needs_marking(msgs):  # control strings in content: split where transformers' markers are
                prompt = self.render_text(mark_control_tokens(msgs[:i], self._control_re), add_generation_prompt=True)
                rest = self.render_text(mark_control_tokens(msgs, self._control_re))[len(prompt):]
                pieces = [(p, k % 2 == 1) for k, p in enumerate(self._markers_re.split(rest)) if p]
            out.append(_Plan(upto, [(start, end, eot)], msgs, turn=i, prompt_chars=start, pieces=pieces,
                             indices=[i]))
        return out

    # -- tokenizing ------------------------------------------------------------------------------------------
    def encode(self, messages: list[dict], text: str, *, add_generation_prompt: bool = False,
               tools: list[dict] | None = None) -> tuple[list[int], np.ndarray, bool]:
        """Token ids and char offsets of `text` (the render of `messages`), control strings in content kept as text.

        Matches `apply_chat_template(..., tokenize=True, sanitize_control_tokens=True)` token for token.
        """
        if not self._needs_marking(messages):
            enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
            return list(enc["input_ids"]), np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2), False
        marked = mark_control_tokens(messages, self._control_re)
        pieces = self._markers_re.split(self.render_text(marked, add_generation_prompt=add_generation_prompt,
                                                         tools=tools))
        ids: list[int] = []
        offsets: list[tuple[int, int]] = []
        cursor = 0
        for k, piece in enumerate(pieces):
            if not piece:
                continue
            piece_ids, piece_offsets = self._encode_piece(piece, as_text=k % 2 == 1, first=k == 0)
            ids += piece_ids
            offsets += [(a + cursor, b + cursor) for a, b in piece_offsets]
            cursor += len(piece)
        assert cursor == len(text), "marked render does not reassemble the plain render"
        return ids, np.asarray(offsets, dtype=np.int64).reshape(-1, 2), True

    def _encode_piece(self, piece: str, *, as_text: bool, first: bool) -> tuple[list[int], list[tuple[int, int]]]:
        # Mirrors transformers' encode_marked_chat: later pieces are encoded after a "\n" that is then removed,
        # so SentencePiece tokenizers don't add a prefix space mid-chat.
        kw = {"add_special_tokens": False, "return_offsets_mapping": True, "split_special_tokens": as_text}
        if not first:
            enc = self.tokenizer("\n" + piece, **kw)
            n = len(self._newline_ids)
            if list(enc["input_ids"][:n]) == self._newline_ids:
                return list(enc["input_ids"][n:]), [(a - 1, b - 1) for a, b in enc["offset_mapping"][n:]]
        enc = self.tokenizer(piece, **kw)
        return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]

    def encode_prompt(self, conv_messages: list[dict], tools: list[dict] | None = None) -> list[int]:
        """Serving: the ids of `messages` (and `tools`) plus the generation prompt, control strings in content kept
        as text."""
        msgs = self.template_messages(conv_messages)
        text = self.render_text(msgs, add_generation_prompt=True, tools=tools)
        return self.encode(msgs, text, add_generation_prompt=True, tools=tools)[0]

    def _encode_plan(self, plan: _Plan) -> tuple[list[int], np.ndarray, bool]:
        if plan.prompt_chars is None:
            return self.encode(plan.messages, plan.text)
        # A serving example: the prompt tokenized alone (as serving does), then what the model generates, in one
        # piece unless content in it holds control strings (those pieces are encoded as text).
        prompt = plan.text[: plan.prompt_chars]
        ids, offsets, escaped = self.encode(plan.messages[:-1], prompt, add_generation_prompt=True)
        pieces = plan.pieces or [(plan.text[plan.prompt_chars:], False)]
        if any(as_text and self._needs_marking(piece) for piece, as_text in pieces):
            escaped = True
        else:
            pieces = [("".join(piece for piece, _ in pieces), False)]
        offsets_list, cursor = offsets.tolist(), len(prompt)
        for piece, as_text in pieces:
            piece_ids, piece_offsets = self._encode_piece(piece, as_text=as_text, first=False)
            ids += piece_ids
            offsets_list += [(a + cursor, b + cursor) for a, b in piece_offsets]
            cursor += len(piece)
        assert cursor == len(plan.text), "serving pieces do not reassemble the example's text"
        return ids, np.asarray(offsets_list, dtype=np.int64).reshape(-1, 2), escaped

    def _needs_marking(self, obj: Any) -> bool:
        """True if any string in `obj` holds a control token or a marker (what mark_control_tokens rewrites)."""
        if isinstance(obj, str):
            return bool(self._control_re.search(obj)) or _MARK_START in obj or _MARK_END in obj
        if isinstance(obj, dict):
            return any(self._needs_marking(v) for v in obj.values())
        if isinstance(obj, (list, tuple)):
            return any(self._needs_marking(v) for v in obj)
        return False

    def _encode_plans(self, plans: list[_Plan]) -> list[tuple[list[int], np.ndarray, bool]]:
        """Encode many plans; plain renders (the common case) go through the fast tokenizer in one batch."""
        plain = [k for k, p in enumerate(plans) if p.prompt_chars is None and not self._needs_marking(p.messages)]
        out: list[Any] = [None] * len(plans)
        if plain:
            backend = self.tokenizer.backend_tokenizer  # the Rust tokenizer: what tokenizer(text) runs, in bulk
            backend.encode_special_tokens = False
            encodings = backend.encode_batch([plans[k].text for k in plain], add_special_tokens=False)
            for enc, k in zip(encodings, plain):
                out[k] = enc
        return [o if o is not None else self._encode_plan(p) for o, p in zip(out, plans)]

    def _edge_differs(self, text: str, ids: list[int], offsets, first: int, start: int) -> bool:
        """True if the prompt's tail, the tokens between its last control token and the reply at char `start`
        (token `first`), is tokenized otherwise than serving, which tokenizes the prompt alone (a GPT-2 style
        tokenizer splits "\\n\\nOrder" into "\\n", "\\n", "Order" but the prompt's "\\n\\n" into one token)."""
        j = first
        while j > 0 and first - j < 8 and ids[j - 1] not in self._special_ids:
            j -= 1
        if j == first:
            return False
        window = text[int(offsets[j][0]): start]
        alone = self._tail_ids.get(window)
        if alone is None:
            alone = self._encode_piece(window, as_text=False, first=j == 0)[0]
            if j > 0 and ids[j - 1] in self._special_ids and len(self._tail_ids) < 256:
                self._tail_ids[window] = alone
        return ids[j:first] != alone

    def _labels_by_lookup(self, enc, plan: _Plan) -> tuple[list[int], list[int], int, set[int]] | None:
        """Labels from a tokenizers `Encoding` by looking up each span's first and end-of-turn token (no per-token
        offset scan); None if a span edge falls on a char no token covers (then the offset scan decides)."""
        ids, offsets = enc.ids, enc.offsets
        labels = [IGNORE_INDEX] * len(ids)
        eot_positions, boundary, eot_ids = [], 0, set()
        for start, end, eot in plan.spans:
            first, eot_tok, last = enc.char_to_token(start), enc.char_to_token(eot), enc.char_to_token(end - 1)
            if first is None or eot_tok is None or last is None or offsets[last][1] != end:
                return None
            if offsets[first][0] < start:  # a token straddling the prompt/reply edge
                boundary += 1
                first += 1
            elif self._edge_differs(plan.text, ids, offsets, first, start):  # the prompt's tail differs from serving's
                boundary += 1
            labels[first: last + 1] = ids[first: last + 1]
            eot_positions.append(eot_tok)
            eot_ids.update(ids[eot_tok: last + 1])
        return labels, eot_positions, boundary, eot_ids

    def tokenize_plan(self, plan: _Plan, meta: dict[str, Any], encoded=None) -> Example:
        """Tokenize one plan (unless `encoded` is given) and derive its labels from the trained char spans."""
        encoded = encoded or self._encode_plan(plan)
        if plan.turn is not None:
            meta = {**meta, "turn": plan.turn}
        fast = None if isinstance(encoded, tuple) else self._labels_by_lookup(encoded, plan)
        if fast is not None:
            labels_list, eot_positions, boundary, eot_ids = fast
            return Example(encoded.ids, labels_list, plan.text, plan.messages, meta, prompt_chars=plan.prompt_chars,
                           trained_messages=len(plan.spans), eot_positions=eot_positions, boundary_tokens=boundary,
                           eot_ids=sorted(eot_ids))
        if not isinstance(encoded, tuple):
            encoded = (encoded.ids, np.asarray(encoded.offsets, dtype=np.int64).reshape(-1, 2), False)
        ids, offsets, escaped = encoded
        ids_np = np.asarray(ids, dtype=np.int64)
        labels = np.full(len(ids), IGNORE_INDEX, dtype=np.int64)
        starts, ends = offsets[:, 0], offsets[:, 1]
        boundary = 0
        eot_positions, eot_ids = [], set()
        for start, end, eot in plan.spans:
            inside = (starts >= start) & (ends <= end) & ((ends > starts) | (starts < end))
            labels[inside] = ids_np[inside]
            boundary += int(np.sum((starts < end) & (ends > start) & ~inside))
            trained = np.flatnonzero(inside)
            if plan.prompt_chars is None and len(trained) and self._edge_differs(plan.text, ids, offsets,
                                                                                int(trained[0]), start):
                boundary += 1
            hits = np.flatnonzero(inside & (starts >= eot))
            eot_positions.append(int(hits[0]) if len(hits) else -1)
            eot_ids.update(ids_np[hits].tolist())
        return Example(ids, labels.tolist(), plan.text, plan.messages, meta, prompt_chars=plan.prompt_chars,
                       trained_messages=len(plan.spans), eot_positions=eot_positions, boundary_tokens=boundary,
                       escaped_control=escaped, eot_ids=sorted(eot_ids))

    def render(self, conv: Conversation) -> list[Example]:
        """All examples of one conversation, tokenized and masked."""
        result = self.render_batch([conv])[0]
        if isinstance(result, RecordError):
            raise result
        return result

    def render_batch(self, convs: list[Conversation]) -> list[list[Example] | RecordError]:
        """Render many conversations, tokenizing them together; a bad one yields its RecordError in place."""
        planned: list[list[_Plan] | RecordError] = []
        for conv in convs:
            try:
                planned.append(self.plan(conv))
            except RecordError as err:
                planned.append(err)
        flat = [p for ps in planned if not isinstance(ps, RecordError) for p in ps]
        encoded = iter(self._encode_plans(flat))
        results: list[list[Example] | RecordError] = []
        for conv, plans in zip(convs, planned):
            if isinstance(plans, RecordError):
                results.append(plans)
                continue
            meta = dict(conv.meta)
            if conv.source is not None:
                meta.setdefault("source", f"{conv.source.path}:{conv.source.line}")
            examples = []
            for p in plans:
                ex = self.tokenize_plan(p, meta, next(encoded))
                if ex.boundary_tokens and p.prompt_chars is None:  # see the module docstring: serving ids
                    examples += [self.tokenize_plan(q, meta) for q in self._serving_plans(p)]
                else:
                    examples.append(ex)
            if any(ex.n_trained == 0 for ex in examples):
                results.append(RecordError("no_trainable_tokens", f"{conv.label}: an example has no trained token",
                                           fix="check the template and the train flags"))
            else:
                results.append(examples)
        return results
