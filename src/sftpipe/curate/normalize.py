"""normalize: mojibake repair (ftfy), Unicode NFKC, whitespace cleanup; returns modified copies.

A record whose messages stop being valid (e.g. a reply that was only zero-width spaces) is dropped with
reason `invalid` and the validation error in its details.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata

import ftfy

from ..conversation import Conversation, validate_messages
from ..errors import RecordError
from .base import Drop, Outcome, RecordStage
from ..config.curate import NormalizeConfig

_INVISIBLE = re.compile("[\u200b\u200c\u200d\u2060\ufeff\u00ad]")
_INNER_SPACES = re.compile(r"(?<=\S)[ \t]{2,}(?=\S)")
_BLANK_LINES = re.compile(r"\n{3,}")
_FENCE = re.compile(r"^\s*(```|~~~)")
# ASCII that ftfy leaves as is: no control characters but tab and newline (terminal escapes, \r and the rest are
# ftfy's to fix); mojibake, quotes, ligatures, widths and normal forms all need non-ASCII characters
_ASCII_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def clean_whitespace(text: str) -> str:
    """Drop invisible characters and trailing spaces, squeeze inner runs of spaces (not inside code fences)
    and runs of blank lines, and strip the ends.

    >>> clean_whitespace("  Hi   there\\u200b  \\n\\n\\n\\nBye ")
    'Hi there\\n\\nBye'
    """
    text = _INVISIBLE.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    lines, in_code = [], False
    for line in text.split("\n"):
        if _FENCE.match(line):
            in_code = not in_code
        elif not in_code:
            line = _INNER_SPACES.sub(" ", line)
        lines.append(line.rstrip())
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def normalize_text(text: str, cfg: NormalizeConfig) -> str:
    """One message's text after the configured steps.

    >>> normalize_text("cafÃ©  ï¬\\x81ne", NormalizeConfig())
    'café fine'
    """
    form = None if cfg.unicode == "none" else cfg.unicode
    if cfg.fix_mojibake and not (text.isascii() and not _ASCII_CONTROL.search(text)):
        text = ftfy.fix_text(text, normalization=form, unescape_html=False)
    elif form and not text.isascii():
        text = unicodedata.normalize(form, text)
    if cfg.whitespace:
        text = clean_whitespace(text)
    return text


class Normalize(RecordStage):
    """Rewrite every message's content; drop records that become invalid."""

    name = "normalize"

    def __init__(self, cfg: NormalizeConfig, strict: bool = False):
        super().__init__(strict)
        self.cfg = cfg

    def process(self, conv: Conversation) -> Outcome:
        messages, changed = [], 0
        for m in conv.messages:
            new = normalize_text(m.content, self.cfg)
            changed += new != m.content
            messages.append(dataclasses.replace(m, content=new) if new != m.content else m)
        out = Conversation(messages, dict(conv.meta), conv.source)
        try:
            validate_messages(messages)
        except RecordError as e:
            if self.strict:
                raise e.located(*(conv.source.path, conv.source.line) if conv.source else (None, None)) from None
            return Drop(out, self.name, "invalid", {"error": e.reason, "message": str(e)}), None
        return out, {"messages_changed": changed} if changed else None
