"""Conversation -> (input_ids, labels) with the model's own chat template, for ANY template.

Assistant spans come from the template itself, by incremental rendering: for each trained assistant message i,
`P = render(messages[:i], add_generation_prompt=True)` is what serving shows before the reply, and
`R = render(messages[:i + 1])` is the conversation up to the reply's end. Everything the model would generate
after `P`, up to and including the first control token that closes the reply (its end-of-turn token), is trained.
Nothing else is: not the role header, BOS, or any system, user or tool text. No `{% generation %}` tags needed.

If `R` is not a prefix of the full render, the template rewrites history (e.g. drops earlier turns' reasoning);
such a conversation is split into one example per trained turn, each exactly what serving would show.
Control-token strings inside content are encoded as plain text, exactly as transformers'
`apply_chat_template(..., sanitize_control_tokens=True)` does, so a user typing `<|im_end|>` cannot end a turn.
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

from .conversation import Conversation
from .errors import RecordError, TemplateError
from .templates import Template, prepare_tokenizer

_SENTINEL = "\U000f0010sftpipe-reply\U000f0011"


@dataclass
class Example:
    """One rendered training example. `labels` is -100 wherever the token is not trained."""

    input_ids: list[int]
    labels: list[int]
    text: str
    messages: list[dict] = field(default_factory=list)  # what the template rendered (for parity and serving)
    meta: dict[str, Any] = field(default_factory=dict)
    prompt_chars: int | None = None  # text = serving prompt (this many chars) + reply: checked against serving
    trained_messages: int = 0
    eot_positions: list[int] = field(default_factory=list)  # token index of each trained reply's end-of-turn
    boundary_tokens: int = 0
    escaped_control: bool = False

    @cached_property
    def n_trained(self) -> int:
        return len(self.labels) - self.labels.count(-100)

    @property
    def eot_trained(self) -> int:
        """How many trained replies keep their end-of-turn token (fewer only after truncation)."""
        return sum(1 for p in self.eot_positions if 0 <= p < len(self.labels) and self.labels[p] != -100)


@dataclass
class _Turn:
    """One trained reply: the text it sits in, its trained char span and where its end-of-turn token starts."""

    index: int
    text: str
    start: int
    end: int
    eot: int
    serving: bool  # text = serving prompt + reply, because the template renders this history differently


@dataclass
class _Plan:
    """Text to tokenize, with the char spans to train (start, end, eot_start)."""

    text: str
    spans: list[tuple[int, int, int]]
    messages: list[dict]
    turn: int | None = None
    prompt_chars: int | None = None  # set when text = serving prompt + reply (not one template render)


class ChatRenderer:
    """Renders, tokenizes and masks conversations with one template and tokenizer."""

    def __init__(self, tokenizer, template: Template, *, train_on: str = "all_assistant"):
        if train_on not in ("all_assistant", "last_assistant"):
            raise ValueError(f"train_on={train_on!r}; allowed: all_assistant, last_assistant")
        self.tokenizer = tokenizer
        self.template = template
        self.train_on = train_on
        self.added_tokens = prepare_tokenizer(tokenizer, template)
        # transformers' own sandboxed, compiled template and the variables apply_chat_template passes it
        self._compiled = _compile_jinja_template(template.source)
        self._variables = {**tokenizer.special_tokens_map, "tools": None, "documents": None}
        control = tokenizer._get_control_tokens(template.source)
        self._control_re, self._markers_re = _get_control_token_patterns(tuple(tokenizer.added_tokens_encoder))
        self._eot_re, _ = _get_control_token_patterns(tuple(control))
        self._newline_ids = tokenizer.encode("\n", add_special_tokens=False)
        # (role before a reply) -> (header after the serving prompt, closing through end-of-turn, eot length)
        self._shapes: dict[str | None, tuple[str, str, int]] = {}
        probe = [{"role": "user", "content": "hi"}]
        # Templates like Mistral's need no generation prompt ("[/INST]" ends the user turn); then nothing may stand
        # between the prompt and the reply, or the model would be trained to write its own role header.
        self._ignores_generation_prompt = self.render_text(probe, add_generation_prompt=True) == self.render_text(
            probe)

    # -- rendering -------------------------------------------------------------------------------------------
    def render_text(self, messages: list[dict], *, add_generation_prompt: bool = False) -> str:
        """The template's text for `messages`, exactly as `tokenizer.apply_chat_template(tokenize=False)` gives it."""
        try:
            return self._compiled.render(messages=messages, add_generation_prompt=add_generation_prompt,
                                         **self._variables)
        except Exception as exc:  # jinja's TemplateError from raise_exception(), or a template bug
            raise RecordError("template_rejected", f"template {self.template.name!r} rejects this conversation: "
                              f"{exc}", field="role", fix="fix the role order (e.g. alternate user/assistant) "
                              "or choose a template that accepts it") from None

    def _trained_indices(self, conv: Conversation) -> list[int]:
        assistant = [i for i, m in enumerate(conv.messages) if m.role == "assistant"]
        default = set(assistant if self.train_on == "all_assistant" else assistant[-1:])
        return [i for i in assistant if (conv.messages[i].train if conv.messages[i].train is not None
                                         else i in default)]

    def _tail(self, text: str) -> str:
        """What follows the last control token of `text` (the end of a role header)."""
        last = None
        for last in self._eot_re.finditer(text):
            pass
        return text[last.end():] if last else text

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
        reply = header + msgs[i]["content"] + closing
        if not (full.startswith(prompt) and full.startswith(reply, len(prompt))):
            return None
        end = len(prompt) + len(reply)
        return _Turn(i, full, len(prompt), end, end - eot_len, serving=False)

    def _turn(self, msgs: list[dict], i: int) -> _Turn:
        """Where assistant message i's generated text lies, rendered as history and as a serving reply."""
        name = self.template.name
        prompt = self.render_text(msgs[:i], add_generation_prompt=True)
        upto = self.render_text(msgs[: i + 1])
        sentinel = _SENTINEL
        while any(sentinel in str(m.get("content")) for m in msgs[: i + 1]):  # content may contain it
            sentinel += "\U000f0012"
        probe = self.render_text(msgs[:i] + [{**msgs[i], "content": sentinel}])
        if sentinel not in probe:
            raise TemplateError(f"template {name!r} does not render the content of assistant message {i}; "
                                "fix: use a template that renders every assistant message")
        head, closing = probe.split(sentinel, 1)
        match = self._eot_re.search(closing)
        if not upto.startswith(head) or not upto.endswith(closing) or match is None:
            raise TemplateError(f"template {name!r} does not close assistant message {i} with an end-of-turn "
                                "control token, so a model trained on it would never learn to stop; fix: end "
                                "assistant turns with eos_token or the template's end-of-turn token")
        reply = upto[len(head): len(upto) - len(closing)]
        if upto.startswith(prompt):
            header = head[len(prompt):]
            if self._ignores_generation_prompt and header.strip():
                raise TemplateError(f"template {name!r} ignores add_generation_prompt, so its assistant header "
                                    f"{header!r} is not in the serving prompt and would be trained; fix: add an "
                                    "add_generation_prompt branch that writes the assistant header")
            eot = len(upto) - len(closing) + match.start()
            if reply == msgs[i]["content"]:
                self._shapes[self._shape_key(msgs, i)] = (header, closing[: match.end()], len(match.group()))
            return _Turn(i, upto, len(prompt), eot + len(match.group()), eot, serving=False)
        lead = self._tail(head)
        if not lead.startswith(self._tail(prompt)):
            at = next((k for k, (a, b) in enumerate(zip(prompt, upto)) if a != b), min(len(prompt), len(upto)))
            raise TemplateError(f"template {name!r}: the generation prompt is not a prefix of the rendered "
                                f"assistant message {i} (serving shows {prompt[at:at + 24]!r} where training has "
                                f"{upto[at:at + 24]!r}), so training and serving would differ; fix: use a "
                                "template whose add_generation_prompt text matches its assistant header")
        # The history differs from the serving prompt (e.g. Mistral v0.3 shows the system prompt only in the
        # last user turn): train on exactly what serving shows, followed by what the model generates.
        text = prompt + lead[len(self._tail(prompt)):] + reply + closing[: match.end()]
        eot = len(text) - len(match.group())
        return _Turn(i, text, len(prompt), len(text), eot, serving=True)

    def plan(self, conv: Conversation) -> list[_Plan]:
        """The examples for one conversation (one per trained turn if the template rewrites history)."""
        msgs = conv.to_template()
        trained = self._trained_indices(conv)
        if not trained:
            raise RecordError("no_trainable_tokens", f"{conv.label} has no trained assistant message (policy "
                              f"{self.train_on}, per-message train flags)", field="train",
                              fix="set train: true on an assistant message or drop the record")
        full = self.render_text(msgs)
        turns = [self._known_turn(msgs, i, full) or self._turn(msgs, i) for i in trained]
        if all(not t.serving and full.startswith(t.text[: t.end]) for t in turns):
            return [_Plan(full, [(t.start, t.end, t.eot) for t in turns], msgs)]
        return [_Plan(t.text, [(t.start, t.end, t.eot)], msgs[: t.index + 1], turn=t.index,
                      prompt_chars=t.start if t.serving else None) for t in turns]

    # -- tokenizing ------------------------------------------------------------------------------------------
    def encode(self, messages: list[dict], text: str, *, add_generation_prompt: bool = False
               ) -> tuple[list[int], np.ndarray, bool]:
        """Token ids and char offsets of `text` (the render of `messages`), control strings in content kept as text.

        Matches `apply_chat_template(..., tokenize=True, sanitize_control_tokens=True)` token for token.
        """
        if not self._needs_marking(messages):
            enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
            return list(enc["input_ids"]), np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2), False
        marked = mark_control_tokens(messages, self._control_re)
        pieces = self._markers_re.split(self.render_text(marked, add_generation_prompt=add_generation_prompt))
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

    def encode_prompt(self, conv_messages: list[dict]) -> list[int]:
        """Serving: the ids of `messages` plus the generation prompt, control strings in content kept as text."""
        text = self.render_text(conv_messages, add_generation_prompt=True)
        return self.encode(conv_messages, text, add_generation_prompt=True)[0]

    def _encode_plan(self, plan: _Plan) -> tuple[list[int], np.ndarray, bool]:
        if plan.prompt_chars is None:
            return self.encode(plan.messages, plan.text)
        # serving prompt, then the reply as text and its end-of-turn as template text, tokenized like generation
        prompt = plan.text[: plan.prompt_chars]
        ids, offsets, escaped = self.encode(plan.messages[:-1], prompt, add_generation_prompt=True)
        start, _, eot = plan.spans[0]
        parts = [(plan.text[start:eot], True), (plan.text[eot:], False)]
        offsets_list, cursor = offsets.tolist(), len(prompt)
        for piece, as_text in parts:
            piece_ids, piece_offsets = self._encode_piece(piece, as_text=as_text, first=False)
            ids += piece_ids
            offsets_list += [(a + cursor, b + cursor) for a, b in piece_offsets]
            cursor += len(piece)
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

    @staticmethod
    def _labels_by_lookup(enc, spans) -> tuple[list[int], list[int], int] | None:
        """Labels from a tokenizers `Encoding` by looking up each span's first and end-of-turn token (no per-token
        offset scan); None if a span edge falls on a char no token covers (then the offset scan decides)."""
        ids, offsets = enc.ids, enc.offsets
        labels = [-100] * len(ids)
        eot_positions, boundary = [], 0
        for start, end, eot in spans:
            first, eot_tok, last = enc.char_to_token(start), enc.char_to_token(eot), enc.char_to_token(end - 1)
            if first is None or eot_tok is None or last is None or offsets[last][1] != end:
                return None
            if offsets[first][0] < start:  # a token straddling the prompt/reply edge is not trained
                boundary += 1
                first += 1
            labels[first: last + 1] = ids[first: last + 1]
            eot_positions.append(eot_tok)
        return labels, eot_positions, boundary

    def tokenize_plan(self, plan: _Plan, meta: dict[str, Any], encoded=None) -> Example:
        """Tokenize one plan (unless `encoded` is given) and derive its labels from the trained char spans."""
        encoded = encoded or self._encode_plan(plan)
        if plan.turn is not None:
            meta = {**meta, "turn": plan.turn}
        fast = None if isinstance(encoded, tuple) else self._labels_by_lookup(encoded, plan.spans)
        if fast is not None:
            labels_list, eot_positions, boundary = fast
            return Example(encoded.ids, labels_list, plan.text, plan.messages, meta, prompt_chars=plan.prompt_chars,
                           trained_messages=len(plan.spans), eot_positions=eot_positions, boundary_tokens=boundary)
        if not isinstance(encoded, tuple):
            encoded = (encoded.ids, np.asarray(encoded.offsets, dtype=np.int64).reshape(-1, 2), False)
        ids, offsets, escaped = encoded
        labels = np.full(len(ids), -100, dtype=np.int64)
        starts, ends = offsets[:, 0], offsets[:, 1]
        boundary = 0
        eot_positions = []
        for start, end, eot in plan.spans:
            inside = (starts >= start) & (ends <= end) & ((ends > starts) | (starts < end))
            labels[inside] = np.asarray(ids)[inside]
            boundary += int(np.sum((starts < end) & (ends > start) & ~inside))
            hits = np.flatnonzero(inside & (starts >= eot))
            eot_positions.append(int(hits[0]) if len(hits) else -1)
        return Example(ids, labels.tolist(), plan.text, plan.messages, meta, prompt_chars=plan.prompt_chars,
                       trained_messages=len(plan.spans),
                       eot_positions=eot_positions, boundary_tokens=boundary, escaped_control=escaped)

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
            examples = [self.tokenize_plan(p, meta, next(encoded)) for p in plans]
            if any(ex.n_trained == 0 for ex in examples):
                results.append(RecordError("no_trainable_tokens", f"{conv.label}: an example has no trained token",
                                           fix="check the template and the train flags"))
            else:
                results.append(examples)
        return results
