"""decontaminate: drop records that share a word n-gram with a named eval set.

Eval prompts are indexed by their 13-grams (`ngram`); prompts shorter than `short_words` words are also indexed
by 8-grams (`short_ngram`), and prompts shorter than that by their whole text. Words are compared after
`norm_text` (casefold, no punctuation). Overlaps are counted per eval set in the report.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from ..conversation import Conversation
from .base import Drop, Outcome, RecordStage, key_text, norm_text
from ..config.curate import BUILTIN_IFEVAL, DecontamConfig


def eval_set_path(ref: str) -> Path:
    """The file of an eval set reference: `builtin:ifeval` (the copy shipped in sftpipe) or a path."""
    if ref == BUILTIN_IFEVAL:
        return Path(str(resources.files("sftpipe.evaluate").joinpath("data", "ifeval_input_data.jsonl")))
    path = Path(ref).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"eval set {ref!r} not found; fix: give a JSONL file with a 'prompt', 'turns', "
                                f"'instruction' or 'messages' field per line, or '{BUILTIN_IFEVAL}'")
    return path


def item_text(obj: dict[str, Any]) -> str:
    """The prompt text of one eval item, whatever its layout.

    >>> item_text({"turns": ["Write a poem.", "Shorter."]})
    'Write a poem.\\nShorter.'
    """
    for key in ("prompt", "question", "text"):
        if isinstance(obj.get(key), str):
            return obj[key]
    if isinstance(obj.get("instruction"), str):
        return "\n".join(x for x in (obj["instruction"], obj.get("input") or "") if x)
    if isinstance(obj.get("turns"), list):
        return "\n".join(t for t in obj["turns"] if isinstance(t, str))
    if isinstance(obj.get("messages"), list):
        return "\n".join(m.get("content") or "" for m in obj["messages"] if m.get("role") == "user")
    raise ValueError(f"eval item has no prompt field (looked for prompt, question, text, instruction, turns, "
                     f"messages); keys present: {sorted(obj)}")


def load_eval_set(ref: str) -> list[tuple[Any, str]]:
    """(item id, prompt text) for every line of an eval set file."""
    items = []
    with open(eval_set_path(ref), encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if line.strip():
                obj = json.loads(line)
                item_id = next((obj[k] for k in ("key", "id", "question_id") if k in obj), n)
                items.append((item_id, item_text(obj)))
    return items


def ngrams(words: list[str], n: int) -> list[str]:
    """Word n-grams as space-joined strings.

    >>> ngrams("a b c d".split(), 3)
    ['a b c', 'b c d']
    """
    return [" ".join(words[i:i + n]) for i in range(len(words) - n + 1)]


class Decontaminate(RecordStage):
    """Drop records overlapping an eval set (details: eval set, item id, n and the shared text)."""

    name = "decontaminate"

    def __init__(self, cfg: DecontamConfig, strict: bool = False, eval_items: dict[str, list] | None = None):
        super().__init__(strict)
        self.cfg = cfg
        self.index: dict[int, dict[str, tuple[str, Any]]] = {cfg.ngram: {}, cfg.short_ngram: {}}
        self.whole: dict[str, tuple[str, Any]] = {}
        sets = eval_items if eval_items is not None else {name: load_eval_set(ref)
                                                          for name, ref in cfg.eval_sets.items()}
        self.sizes = {name: len(items) for name, items in sets.items()}
        for name, items in sets.items():
            for item_id, text in items:
                self._add(name, item_id, norm_text(text).split())

    def _add(self, name: str, item_id: Any, words: list[str]) -> None:
        if len(words) < self.cfg.short_ngram:
            if words:
                self.whole.setdefault(" ".join(words), (name, item_id))
            return
        for g in ngrams(words, self.cfg.ngram):
            self.index[self.cfg.ngram].setdefault(g, (name, item_id))
        if len(words) < self.cfg.short_words:
            for g in ngrams(words, self.cfg.short_ngram):
                self.index[self.cfg.short_ngram].setdefault(g, (name, item_id))

    def match(self, text: str) -> dict[str, Any] | None:
        """The first eval overlap in `text` as details, or None."""
        words = norm_text(text).split()
        for n in sorted(self.index, reverse=True):
            table = self.index[n]
            if not table:
                continue
            for g in ngrams(words, n):
                hit = table.get(g)
                if hit:
                    return {"eval_set": hit[0], "item": hit[1], "ngram": n, "overlap": g}
        if self.whole:
            padded = f" {' '.join(words)} "
            for phrase, hit in self.whole.items():
                if f" {phrase} " in padded:
                    return {"eval_set": hit[0], "item": hit[1], "ngram": len(phrase.split()), "overlap": phrase}
        return None

    def process(self, conv: Conversation) -> Outcome:
        hit = self.match(key_text(conv, self.cfg.key))
        if hit is None:
            return conv, None
        return Drop(conv, self.name, "contaminated", hit), {f"overlap_{hit['eval_set']}": 1}
