"""pii: find personal data in every message and replace it with typed placeholders ([EMAIL], [PHONE], ...).

Recognizers (in priority order when spans overlap): EMAIL (regex), IP (regex, checked by `ipaddress`),
CARD (13-19 digits that pass the Luhn check), SSN (ddd-dd-dddd, valid ranges), PHONE (Google's
libphonenumber via `phonenumbers`: valid numbers, or possible ones written in a phone layout), ADDRESS and PERSON.
Cards must also start with 2-6 and no number right after "order", "ref", "code" etc. counts as a card or phone.

ADDRESS: a street with its house number, in the number-first order of English and French addresses ("12 Oak
Lane", "12 Rue de Rivoli") or the street-first order of most of Europe and Latin America ("Hauptstraße 5", "Via
Roma 25", "Av. Paulista, 1578"), Japanese block numbers, CJK addresses and PO boxes; widened left to a flat or
building and right to unit, city, region and postcode (US, UK, CA, IE, NL, PT/BR, PL, SE/CZ, JP and 4-6 digits).

PERSON: runs of capitalised words (any cased script: Latin, Greek, Cyrillic, Armenian) or of letters of a caseless
script (CJK, Hangul, Arabic, Hebrew, Indic, Thai, Georgian, ...), with particles ("van der", "bin", "de la"). A
run is a name after a cue: a title, "my name is", "I'm", "this is", "Name:", a greeting or sign-off, a relation
("my wife", "ask", "spoke with"), a signature line, "<name> here". Without a cue it must look like a name on its
own: a first name from the lists that is not an English word, or first and last names with at least one listed.
Words in the English word list (data/common_words.txt) or data/stop_words.txt end a name; a word that is also a
listed name ("Bell", "Grace") may stay inside a cued one. A staff member's lone first name introducing the company
("Carlos here from Harbor Support") is not redacted. Name lists: US census plus hand-compiled lists of names from
many countries (data/*names*.txt). Known misses: a name in no list and with no cue ("Florentyna said so"),
companies named after people ("Morgan Stanley"), a street-named product after a count ("2 Park Avenue mugs").
Measured per type on tests/assets/pii/labelled.jsonl (bench/curate_bench.py). Presidio was not used: it needs
spaCy and a downloaded NER model for names and addresses; regex-only, it finds neither.

After redaction every value detected in a record is also replaced wherever else it occurs in that record,
so no detected value is left behind.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections import Counter
from functools import lru_cache

import phonenumbers
from phonenumbers import phonenumbermatcher

from ..conversation import Conversation
from .base import Drop, Outcome, RecordStage
from ..config.curate import PII_TYPES, PiiConfig
from .pii_address import _address_spans
from .pii_names import _person_spans
from .pii_scripts import Span

_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.]*\d)")
_IPV6 = re.compile(r"(?<![\w:.])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?![\w:])")  # checked by ipaddress
_CARD = re.compile(r"(?<![\w-])(?:\d[ -]?){12,18}\d(?![\w-])")
_SSN = re.compile(r"(?<![\w-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\w-])")
_PHONE_LAYOUT = re.compile(r"^\+|^\(?\d{3}\)?[\s.-]\d{3}[\s.-]\d{4}$|^\d{3,5}[\s.-]\d{3,4}[\s.-]?\d{3,4}$")
_SEVEN_DIGITS = re.compile(r"\d(?:\D*\d){6}")
# the matcher's own candidate pattern (digit blocks, phone punctuation, extensions): a text where no candidate has 7
# digits holds no phone, so the costly parse of order ids and amounts is skipped
_PHONE_CANDIDATE: re.Pattern = phonenumbermatcher._PATTERN
SHORT = 64  # texts up to this length (names, ids, categories in a record's fields) repeat: their spans are cached
_ID_BEFORE = re.compile(r"(?:#|[A-Za-z]-|(?i:order|ref|reference|ticket|invoice|tracking|case|id|no\.?|code|coupon|"
                        r"voucher|promo)(?:\s+(?:number|no\.?|id|code|#))?(?:\s+is)?\s*[:#]?\s*)$")


def luhn_ok(digits: str) -> bool:
    """True if a digit string passes the Luhn checksum (as card numbers do).

    >>> luhn_ok("4111111111111111"), luhn_ok("4111111111111112")
    (True, False)
    """
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _ip_spans(text: str) -> list[Span]:
    out = []
    for m in [*_IPV4.finditer(text), *_IPV6.finditer(text)]:
        try:
            ipaddress.ip_address(m.group())
        except ValueError:
            continue
        out.append(Span(m.start(), m.end(), "IP", m.group()))
    return out


def _card_spans(text: str) -> list[Span]:
    out = []
    for m in _CARD.finditer(text):
        digits = re.sub(r"\D", "", m.group())
        if _ID_BEFORE.search(text[max(0, m.start() - 16):m.start()]) or digits[0] not in "23456":
            continue  # a code or reference number; card numbers start with 2-6 (the issuer's major industry)
        if 13 <= len(digits) <= 19 and luhn_ok(digits):
            out.append(Span(m.start(), m.end(), "CARD", m.group()))
    return out


def _phone_spans(text: str, region: str) -> list[Span]:
    if not any(_SEVEN_DIGITS.search(m.group()) for m in _PHONE_CANDIDATE.finditer(text)):
        return []
    return _matched_phones(text, region)


def _matched_phones(text: str, region: str) -> list[Span]:
    """Phones libphonenumber's matcher finds in `text` that are valid or laid out as phones, not ids."""
    out = []
    for m in phonenumbers.PhoneNumberMatcher(text, region, leniency=phonenumbers.Leniency.POSSIBLE):
        raw = m.raw_string
        if _ID_BEFORE.search(text[max(0, m.start - 16):m.start]):
            continue  # an order / ticket number, not a phone
        if phonenumbers.is_valid_number(m.number) or _PHONE_LAYOUT.search(raw):
            out.append(Span(m.start, m.end, "PHONE", raw))
    return out


def find_pii(text: str, types: tuple[str, ...] | list[str] = PII_TYPES, region: str = "US") -> list[Span]:
    """All PII spans in `text`, sorted and non-overlapping (higher-priority recognizers win).

    >>> [(s.type, s.value) for s in find_pii("Mail jo@x.org or call (415) 555-0132, Mr. Alvarez.")]
    [('EMAIL', 'jo@x.org'), ('PHONE', '(415) 555-0132'), ('PERSON', 'Alvarez')]
    """
    if len(text) <= SHORT:
        return list(_find_short(text, tuple(types), region))
    return _find(text, types, region)


@lru_cache(maxsize=2**16)
def _find_short(text: str, types: tuple[str, ...], region: str) -> tuple[Span, ...]:
    return tuple(_find(text, types, region))


def _find(text: str, types, region: str) -> list[Span]:
    found: list[Span] = []
    if "EMAIL" in types:
        found += [Span(m.start(), m.end(), "EMAIL", m.group()) for m in _EMAIL.finditer(text)]
    if "IP" in types:
        found += _ip_spans(text)
    if "CARD" in types:
        found += _card_spans(text)
    if "SSN" in types:
        found += [Span(m.start(), m.end(), "SSN", m.group()) for m in _SSN.finditer(text)]
    if "PHONE" in types:
        found += _phone_spans(text, region)
    if "ADDRESS" in types:
        found += _address_spans(text)
    if "PERSON" in types:
        found += _person_spans(text)
    if len(found) < 2:
        return found
    chosen: list[Span] = []
    taken = [False] * (len(text) + 1)
    for span in found:  # priority = order found
        if not any(taken[span.start:span.end]):
            chosen.append(span)
            for i in range(span.start, span.end):
                taken[i] = True
    return sorted(chosen, key=lambda s: s.start)


def redact(text: str, spans: list[Span]) -> str:
    """Replace each span with its `[TYPE]` placeholder.

    >>> redact("mail jo@x.org now", [Span(5, 13, "EMAIL", "jo@x.org")])
    'mail [EMAIL] now'
    """
    parts, pos = [], 0
    for s in spans:
        parts += [text[pos:s.start], f"[{s.type}]"]
        pos = s.end
    return "".join(parts) + text[pos:]


def scrub_values(text: str, values: dict[str, str]) -> str:
    """Replace every whole-word occurrence of already-detected values (value -> type) with placeholders."""
    for value in sorted(values, key=len, reverse=True):
        if value in text:
            text = re.sub(rf"(?<!\w){re.escape(value)}(?!\w)", f"[{values[value]}]", text)
    return text


def redact_text(text: str, types=PII_TYPES, region: str = "US") -> tuple[str, Counter]:
    """Detect and redact one text; return the new text and the counts by type."""
    spans = find_pii(text, types, region)
    return redact(text, spans), Counter(s.type for s in spans)


class Pii(RecordStage):
    """Redact PII in every message of the configured roles (or drop records that contain any)."""

    name = "pii"

    def __init__(self, cfg: PiiConfig, strict: bool = False):
        super().__init__(strict)
        self.cfg = cfg

    def process(self, conv: Conversation) -> Outcome:
        counts: Counter = Counter()
        values: dict[str, str] = {}
        texts = []
        for m in conv.messages:
            spans = find_pii(m.content, self.cfg.types, self.cfg.phone_region) if m.role in self.cfg.roles else []
            counts.update(s.type for s in spans)
            values.update({s.value: s.type for s in spans})
            # each part of a detected name counts as detected (e.g. a first name mentioned alone later)
            values.update({p: "PERSON" for s in spans if s.type == "PERSON" for p in s.value.split()
                               if len(p) > 2 and p not in values})
            texts.append(redact(m.content, spans))
        if values:
            texts = [scrub_values(t, values) if m.role in self.cfg.roles else t
                     for t, m in zip(texts, conv.messages)]
        messages = [dataclasses.replace(m, content=t) if t != m.content else m for m, t in zip(conv.messages, texts)]
        meta_counts: Counter = Counter()
        meta = self._scrub_meta(conv.meta, meta_counts, values) if self.cfg.meta else dict(conv.meta)
        out = Conversation(messages, meta, conv.source)
        stats = {f"found_{k}": v for k, v in counts.items()} | {f"meta_{k}": v for k, v in meta_counts.items()}
        if counts and self.cfg.action == "drop":
            return Drop(out, self.name, "pii_found", {"types": dict(sorted(counts.items()))}), stats
        if counts:
            stats["records_redacted"] = 1
        return out, stats or None

    def _scrub_meta(self, obj, counts: Counter, values: dict[str, str]):
        """Redact every string inside the record's extra fields (e.g. a customer name kept in `facts`)."""
        if isinstance(obj, str):
            spans = find_pii(obj, self.cfg.types, self.cfg.phone_region)
            counts.update(s.type for s in spans)
            return scrub_values(redact(obj, spans), values) if values else redact(obj, spans)
        if isinstance(obj, list):
            return [self._scrub_meta(x, counts, values) for x in obj]
        if isinstance(obj, dict):
            return {k: self._scrub_meta(v, counts, values) for k, v in obj.items()}
        return obj
