"""filters: per-record checks, each returning (keep, reason, details); the first failing check drops the record.

Reasons: empty_reply, truncated_reply (kind: mid_sentence | unbalanced_code_fence | unbalanced_json),
too_short / too_long (tokens of all message contents: the given tokenizer, else ceil(chars / 4); a tokenizer given
as a model reference is loaded once per process, so worker pools get the name, not a pickled tokenizer),
wrong_language (py3langid), toxic (shipped abuse patterns), boilerplate_opener (stock phrases opening a reply).
"""

from __future__ import annotations

import math
import re
from functools import lru_cache
from importlib import resources
from typing import Any

from ..conversation import Conversation
from .base import Drop, Outcome, RecordStage
from ..config.curate import FiltersConfig

Check = tuple[bool, str | None, dict[str, Any]]
OK: Check = (True, None, {})

_TERMINAL = re.compile(r"""[.!?…:;)\]}"'”’*`>~|]$|[^\w\s,(\[{-]$""")
_SENTENCE_END = re.compile(r"\w[.!?](?:\s|$)")
_LIST_ITEM = re.compile(r"^\s*(?:[-*•—–]|\d+[.)])\s")
_DANGLING = frozenset(["and", "or", "but", "the", "a", "an", "to", "of", "for", "with", "within", "by", "in", "on",
                       "at", "your", "our", "we", "will", "is", "are", "be", "if", "that", "this", "which", "as",
                       "from", "you", "i", "it"])
_PLACEHOLDER = re.compile(r"\[[A-Z]+\]|```.*?```", re.S)
_BOILERPLATE = re.compile("|".join([
    r"thank(?:s| you) (?:so much |very much )?for (?:contacting|reaching out|your (?:message|patience|inquiry|email"
    r"|question|understanding|loyalty|business))",
    r"we (?:truly |really |sincerely |greatly )?(?:appreciate|value) (?:your|you)",
    r"i hope (?:this|you|your)", r"your (?:satisfaction|experience|happiness) is", r"customer (?:satisfaction|"
    r"experience) is", r"we are (?:fully |deeply )?(?:committed|dedicated) to", r"(?:please )?rest assured",
    r"we understand (?:how|that|your)", r"i (?:completely |totally |fully )?understand (?:how|that|your)",
    r"it is (?:my|our) (?:pleasure|priority|goal)", r"we apologi[sz]e for any inconvenience",
    r"i am (?:here|happy|more than happy|glad|delighted) to (?:help|assist)", r"as an ai\b",
    r"thank you for being a (?:valued|loyal)", r"(?:at|here at) harbor support,? we",
    r"we (?:strive|aim) to", r"your (?:concern|request|inquiry) is (?:important|very important)"]), re.I)


@lru_cache(maxsize=1)
def _abuse() -> re.Pattern:
    text = resources.files("sftpipe.curate").joinpath("data", "abuse_patterns.txt").read_text(encoding="utf-8")
    pats = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    return re.compile(r"(?<!\w)(?:" + "|".join(pats) + r")(?!\w)", re.I)


@lru_cache(maxsize=1)
def _langid():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def truncation(text: str) -> str | None:
    """Why a reply looks cut off, or None.

    >>> truncation("Your refund of $20 will be sent to"), truncation("Done.\\n```py\\nx = 1"), truncation("Done!")
    ('mid_sentence', 'unbalanced_code_fence', None)
    """
    lines = text.splitlines()
    if text.count("```") % 2:
        return "unbalanced_code_fence"
    if text.count("{") != text.count("}") or text.count("[") != text.count("]"):
        return "unbalanced_json"
    last = next((line.strip() for line in reversed(lines) if line.strip()), "")
    if not last or _TERMINAL.search(last) or _LIST_ITEM.match(last):
        return None
    words = last.split()
    if last.endswith(",") and len(lines) > 1 or words[-1].lower() in _DANGLING:
        return "mid_sentence"
    # prose that stops without a full stop; a one-line list ("2, 4, 6, 8") is a complete answer
    if len(words) >= 4 and last[-1].isalpha() and _SENTENCE_END.search(text):
        return "mid_sentence"
    return None


def boilerplate_phrases(text: str) -> list[str]:
    """Stock phrases in a reply's opening: its leading paragraphs that each contain at least one.

    >>> boilerplate_phrases("Thank you for contacting us! We value your trust.\\n\\nYour order ships today.")
    ['Thank you for contacting', 'We value your']
    """
    found: list[str] = []
    for para in re.split(r"\n\s*\n", text.strip()):
        hits = [m.group() for m in _BOILERPLATE.finditer(para)]
        if not hits:
            break
        found += hits
    return found


@lru_cache(maxsize=2)
def _load_tokenizer(ref: str):
    from ..models import load_tokenizer

    return load_tokenizer(ref)


def count_tokens(texts: list[str], tokenizer=None) -> int:
    """Tokens in `texts`: the tokenizer's count without special tokens, else the estimate ceil(chars / 4)."""
    if tokenizer is None:
        return sum(math.ceil(len(t) / 4) for t in texts)
    if not texts:
        return 0
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:  # the same ids without the wrapper's per-call work (offsets, padding, dicts)
        return sum(len(e.ids) for e in backend.encode_batch_fast(texts, add_special_tokens=False))
    return sum(len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"])


class Filters(RecordStage):
    """All enabled per-record filters, in a fixed order."""

    name = "filters"

    def __init__(self, cfg: FiltersConfig, tokenizer=None, strict: bool = False):
        super().__init__(strict)
        self.cfg, self.tokenizer = cfg, tokenizer  # a tokenizer, a model reference (str) or None
        if isinstance(tokenizer, str):
            _load_tokenizer(tokenizer)  # here, so a missing tokenizer is one error, not a reject for every record

    def _tokenizer(self):
        return _load_tokenizer(self.tokenizer) if isinstance(self.tokenizer, str) else self.tokenizer

    def checks(self, conv: Conversation) -> list:
        c = self.cfg
        return [f for on, f in ((c.empty, self.check_empty), (c.truncated, self.check_truncated),
                                (True, self.check_length), (bool(c.languages), self.check_language),
                                (c.toxicity, self.check_toxicity), (c.boilerplate, self.check_boilerplate)) if on]

    def process(self, conv: Conversation) -> Outcome:
        for check in self.checks(conv):
            keep, reason, details = check(conv)
            if not keep:
                return Drop(conv, self.name, reason, details), None
        return conv, None

    @staticmethod
    def _replies(conv: Conversation):
        return [(i, m) for i, m in enumerate(conv.messages) if m.role == "assistant"]

    def check_empty(self, conv: Conversation) -> Check:
        for i, m in self._replies(conv):
            if not m.tool_calls and not any(ch.isalnum() for ch in m.content):
                return False, "empty_reply", {"index": i, "content": m.content}
        return OK

    def check_truncated(self, conv: Conversation) -> Check:
        for i, m in self._replies(conv):
            kind = truncation(m.content) if m.content else None
            if kind:
                return False, "truncated_reply", {"index": i, "kind": kind, "ending": m.content[-40:]}
        return OK

    def check_length(self, conv: Conversation) -> Check:
        n = count_tokens([m.content for m in conv.messages], self._tokenizer())
        how = "tokenizer" if self.tokenizer is not None else "chars/4"
        if n < self.cfg.min_tokens:
            return False, "too_short", {"tokens": n, "min_tokens": self.cfg.min_tokens, "counted_by": how}
        if n > self.cfg.max_tokens:
            return False, "too_long", {"tokens": n, "max_tokens": self.cfg.max_tokens, "counted_by": how}
        return OK

    def check_language(self, conv: Conversation) -> Check:
        text = " ".join(m.content for m in conv.messages if m.role in self.cfg.language_roles)
        text = _PLACEHOLDER.sub(" ", text).strip()
        if len(text) < self.cfg.language_min_chars:
            return OK
        lang, prob = _langid().classify(text)
        if lang not in self.cfg.languages and prob >= self.cfg.language_min_confidence:
            return False, "wrong_language", {"language": lang, "confidence": round(float(prob), 3),
                                             "allowed": list(self.cfg.languages)}
        return OK

    def check_toxicity(self, conv: Conversation) -> Check:
        for i, m in enumerate(conv.messages):
            if m.role in self.cfg.toxicity_roles:
                hits = sorted({h.group().lower() for h in _abuse().finditer(m.content)})
                if hits:
                    return False, "toxic", {"index": i, "role": m.role, "matches": hits}
        return OK

    def check_boilerplate(self, conv: Conversation) -> Check:
        for i, m in self._replies(conv):
            found = boilerplate_phrases(m.content)
            if len(found) >= self.cfg.boilerplate_min_phrases:
                return False, "boilerplate_opener", {"index": i, "phrases": found}
        return OK
