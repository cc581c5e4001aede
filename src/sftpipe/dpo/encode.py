"""Pairs -> `prompt_ids`, `chosen_ids`, `rejected_ids` with sftpipe's own renderer, exactly what SFT trains.

Each side is rendered as the prompt plus that one reply, with only the reply trained (`Pair.conversation`). The
completion is the reply's trained tokens: the reply and the turn ending that closes it (`<|im_end|>` for ChatML),
nothing after it; control strings inside content stay text. The prompt ids are the tokens before the first trained
one, which the renderer makes exactly serving's (`ChatRenderer.encode_prompt`); both sides must agree on them.

Against TRL's own tokenization (`DPOTrainer._prepare_dataset`: `apply_chat_template` of prompt + reply): TRL trains
every token after the prompt, so for ChatML also the `\\n` the template writes after `<|im_end|>`; it tokenizes
control strings in content as control tokens; and where prompt and prompt+reply tokenize the edge differently it
cuts the prompt short. sftpipe trains the SFT span only, escapes control strings and keeps serving's prompt.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..errors import RecordError
from ..labels import label_runs
from ..render import ChatRenderer
from .pairs import Pair

def _side(renderer: ChatRenderer, pair: Pair, side: str) -> tuple[list[int], list[int], list[int]]:
    """(prompt ids, completion ids, labels of the whole SFT example) for one side."""
    examples = renderer.render(pair.conversation(side))
    if len(examples) != 1:  # one trained turn gives one example; anything else is a renderer invariant broken
        raise RecordError("template_split", f"the template renders the {side} side as {len(examples)} examples",
                          field=side, fix="use a template that renders a single reply as one example")
    ex = examples[0]
    trained = [(start, end) for start, end, is_trained in label_runs(ex.labels) if is_trained]
    if len(trained) != 1:  # one reply: its trained tokens are one run
        raise RecordError("template_split", f"the {side} reply's trained tokens are not contiguous", field=side,
                          fix="use a template that renders the reply as one span")
    (first, end), = trained
    return ex.input_ids[:first], ex.input_ids[first:end], ex.labels


def check_prefix(renderer: ChatRenderer, pair: Pair) -> None:
    """The prompt's serving render (with the generation prompt) must begin both sides' renders."""
    prompt = renderer.render_text(renderer.template_messages([m.to_template() for m in pair.prompt]),
                                  add_generation_prompt=True)
    for side in ("chosen", "rejected"):
        msgs = renderer.template_messages(pair.conversation(side).to_template())
        if not renderer.render_text(msgs).startswith(prompt):
            raise RecordError("prompt_not_prefix", f"the template renders the prompt differently once the {side} "
                              "reply follows (the serving prompt is not a prefix of the conversation)", field=side,
                              fix="use a template whose serving prompt is a prefix of the rendered conversation, or "
                                  "drop the turns it rewrites (e.g. earlier reasoning) from the prompt")


def encode_pair(renderer: ChatRenderer, pair: Pair) -> dict[str, list[int]]:
    """One pair -> {prompt_ids, chosen_ids, rejected_ids}; `RecordError` when the sides' prompts differ."""
    check_prefix(renderer, pair)
    prompt, chosen, _ = _side(renderer, pair, "chosen")
    prompt_r, rejected, _ = _side(renderer, pair, "rejected")
    if prompt != prompt_r:
        raise RecordError("prompt_not_prefix", "chosen and rejected tokenize the shared prompt differently",
                          field="rejected", fix="check the template: the prompt must render the same before both "
                                                "replies")
    if chosen == rejected:
        raise RecordError("identical_replies", "chosen and rejected tokenize to the same tokens", field="rejected",
                          fix="drop the pair, or give a reply that was ranked lower")
    return {"prompt_ids": prompt, "chosen_ids": chosen, "rejected_ids": rejected}


@dataclass
class EncodedPairs:
    """Tokenized pairs with their rejects (reason, file:line) and counts."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    pairs: list[Pair] = field(default_factory=list)  # the kept pairs, in the order of `rows`
    rejects: list[dict] = field(default_factory=list)
    records_in: int = 0
    reasons: Counter = field(default_factory=Counter)

    def summary(self) -> dict[str, Any]:
        """JSON-ready counts for run.json."""
        toks = [len(r["prompt_ids"]) + len(r["chosen_ids"]) + len(r["rejected_ids"]) for r in self.rows]
        return {"records_in": self.records_in, "pairs": len(self.rows), "rejected": len(self.rejects),
                "rejected_by_reason": dict(self.reasons), "tokens": sum(toks),
                "chosen_tokens": sum(len(r["chosen_ids"]) for r in self.rows),
                "rejected_tokens": sum(len(r["rejected_ids"]) for r in self.rows)}


def encode_pairs(items: Iterable[Pair | RecordError], renderer: ChatRenderer, *, max_length: int,
                 max_prompt_length: int, on_error: str = "fail") -> EncodedPairs:
    """Tokenize every pair; a bad or too long one raises (`fail`) or becomes a reject with its reason (`skip`).
    records in == pairs kept + rejects."""
    out = EncodedPairs()
    for item in items:
        out.records_in += 1
        try:
            if isinstance(item, RecordError):
                raise item
            row = encode_pair(renderer, item)
            n_prompt = len(row["prompt_ids"])
            longest = n_prompt + max(len(row["chosen_ids"]), len(row["rejected_ids"]))
            if n_prompt > max_prompt_length or longest > max_length:
                raise RecordError("too_long", f"prompt {n_prompt} tokens (max_prompt_length {max_prompt_length}), "
                                  f"prompt + longer reply {longest} (max_length {max_length})",
                                  fix="raise dpo.max_length / dpo.max_prompt_length, or shorten the pair")
        except RecordError as err:
            if not isinstance(item, RecordError) and item.source is not None and err.path is None:
                err = err.located(item.source.path, item.source.line)
            if on_error == "fail":
                raise err from None
            out.reasons[err.reason] += 1
            out.rejects.append({**err.to_dict(), "stage": "dpo",
                                "record": item.to_record() if isinstance(item, Pair) else None})
            continue
        out.rows.append(row)
        out.pairs.append(item)
    assert out.records_in == len(out.rows) + len(out.rejects)
    return out
