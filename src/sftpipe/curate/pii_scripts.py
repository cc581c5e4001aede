"""Building blocks shared by the PII name and address finders: regex character classes of cased and caseless
scripts, the word lists of data/, and the detected `Span`."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources


def _char_class(pred, *blocks: tuple[int, int]) -> str:
    """A regex character class of the code points in `blocks` for which `pred(char)` holds."""
    runs: list[list[int]] = []
    for lo, hi in blocks:
        for cp in range(lo, hi + 1):
            if pred(chr(cp)):
                if runs and runs[-1][1] == cp - 1:
                    runs[-1][1] = cp
                else:
                    runs.append([cp, cp])
    return "[" + "".join(re.escape(chr(a)) + ("" if a == b else "-" + re.escape(chr(b))) for a, b in runs) + "]"


_CASED = ((0x41, 0x24F), (0x370, 0x3FF), (0x400, 0x52F), (0x531, 0x58F), (0x1E00, 0x1FFF))
_UP = _char_class(lambda c: c.isupper() or c.istitle(), *_CASED)
_LO = _char_class(lambda c: c.islower() or unicodedata.category(c) in ("Mn", "Lm"), (0x300, 0x36F), *_CASED)
_CL = _char_class(lambda c: unicodedata.category(c) in ("Lo", "Lm", "Mn", "Mc") or "\u10d0" <= c <= "\u10ff",
                  (0x590, 0x8FF), (0x900, 0xDFF), (0xE00, 0xEFF), (0xF00, 0x109F), (0x10D0, 0x10FF),
                  (0x1100, 0x11FF), (0x1200, 0x139F), (0x1780, 0x18AF), (0x3040, 0x30FF), (0x3400, 0x4DBF),
                  (0x4E00, 0x9FFF), (0xAC00, 0xD7AF), (0xF900, 0xFAFF))  # letters of caseless scripts
_L = f"(?:{_UP}|{_LO})"


@dataclass(frozen=True)
class Span:
    """One detected value: character offsets into the text, its type and the text itself."""

    start: int
    end: int
    type: str
    value: str


_DIGIT = re.compile(r"\d")


@lru_cache(maxsize=1)
def _lexicon() -> dict[str, frozenset]:
    """Word lists from data/: first and last names, English words, places, stop words, ambiguous first names."""
    def words(*names: str) -> frozenset:
        out = set()
        for name in names:
            text = resources.files("sftpipe.curate").joinpath("data", name).read_text(encoding="utf-8")
            out.update(w for line in text.splitlines() if not line.startswith("#") for w in line.split())
        return frozenset(out)
    return {"first": words("first_names.txt", "first_names_world.txt"),
            "last": frozenset(w for w in words("last_names.txt", "last_names_world.txt") if w[:1].isupper()),
            "word": words("common_words.txt"), "place": words("places.txt"), "stop": words("stop_words.txt"),
            "ambiguous": words("ambiguous_first_names.txt")}
