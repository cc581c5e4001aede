"""Grammar-constrained decoding with llguidance (the engine behind llama.cpp's, vLLM's and SGLang's structured
outputs): a JSON schema or a Lark grammar compiles once per request into a matcher that masks every token the
grammar cannot take next. When the grammar is complete only the end-of-turn ids stay allowed, so a constrained
reply ends exactly where its JSON does.

`Grammars(tokenizer, vocab_size, stop_ids)` wraps the tokenizer for llguidance once (about a second), then
`grammars.json(schema)` / `grammars.lark(text)` give a fresh `Constraint` per request. A grammar llguidance rejects
is a `GrammarError` naming why; the server answers it with a 400.
"""

from __future__ import annotations

from typing import Any


# JSON as json.dumps and Jinja's tojson write it (", " and ": ", no other whitespace): the layout a model saw in
# training, and no room for a weak model to pad a reply with endless whitespace
JSON_LAYOUT = {"item_separator": ", ", "key_separator": ": ", "whitespace_flexible": False}


class GrammarError(ValueError):
    """A schema or grammar that cannot be compiled (the message says why)."""


def with_layout(schema: dict[str, Any] | None) -> dict[str, Any]:
    """`schema` (None: any JSON object) with `JSON_LAYOUT` as its llguidance options, unless it sets its own.

    >>> with_layout({"type": "integer"})["x-guidance"]["whitespace_flexible"]
    False
    """
    schema = {"type": "object"} if schema is None else schema
    return {**schema, "x-guidance": {**JSON_LAYOUT, **schema.get("x-guidance", {})}}


def json_schema_grammar(schema: dict[str, Any] | None) -> str:
    """The llguidance grammar for a JSON value matching `schema` (None: any JSON object).

    >>> import json
    >>> json.loads(json_schema_grammar({"type": "integer"}))["grammars"][0]["json_schema"]["type"]
    'integer'
    """
    from llguidance import LLMatcher

    try:
        return LLMatcher.grammar_from_json_schema(with_layout(schema))
    except ValueError as e:
        raise GrammarError(f"the JSON schema cannot be compiled: {e}") from None


def lark_grammar(text: str) -> str:
    """The llguidance grammar for a Lark grammar text (which may embed `%json {schema}` rules)."""
    from llguidance import LLMatcher

    return LLMatcher.grammar_from_lark(text)


class Constraint:
    """One request's grammar state: `mask` the next-token logits, then `accept` the token picked. `spec` is what it
    was compiled from, in vLLM's `structured_outputs` shape ({"json": schema} or {"grammar": lark}), for an engine
    behind a front that compiles its own."""

    def __init__(self, matcher, spec: dict[str, Any]):
        self.matcher, self.spec = matcher, spec

    def mask(self, logits) -> None:
        """Set the logits of tokens the grammar cannot take next to -inf, in place (a 1-D row)."""
        import numpy as np
        import torch

        allowed = np.frombuffer(self.matcher.compute_bitmask(), dtype=np.uint8)
        bits = np.unpackbits(allowed, bitorder="little")[: logits.shape[-1]].astype(bool)
        logits.masked_fill_(torch.from_numpy(~bits).to(logits.device), float("-inf"))

    def accept(self, token: int) -> bool:
        """Advance the grammar by `token`; False if the grammar cannot take it (then the reply stops)."""
        return bool(self.matcher.consume_token(token))

    @property
    def complete(self) -> bool:
        """True once the grammar is satisfied (the reply may end here)."""
        return bool(self.matcher.is_accepting())


class Grammars:
    """Compiles grammars against one tokenizer and vocabulary; each call gives a new `Constraint`."""

    def __init__(self, tokenizer, vocab_size: int, stop_ids: list[int]):
        import llguidance.hf

        # the end-of-turn ids are the grammar's end: a finished grammar allows only them
        self.tokenizer = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab_size, eos_token=list(stop_ids))

    def compile(self, grammar: str, spec: dict[str, Any]) -> Constraint:
        """A constraint for an llguidance grammar (from `json_schema_grammar` or `lark_grammar`) compiled from
        `spec`."""
        from llguidance import LLMatcher

        error = LLMatcher.validate_grammar(grammar, self.tokenizer)
        if error:
            raise GrammarError(error)
        matcher = LLMatcher(self.tokenizer, grammar, log_level=0)
        if matcher.is_error():
            raise GrammarError(matcher.get_error())
        return Constraint(matcher, spec)

    def json(self, schema: dict[str, Any] | None) -> Constraint:
        """A constraint to one JSON value matching `schema` (None: any JSON object)."""
        return self.compile(json_schema_grammar(schema), {"json": with_layout(schema)})

    def lark(self, text: str) -> Constraint:
        """A constraint to a Lark grammar."""
        return self.compile(lark_grammar(text), {"grammar": text})
