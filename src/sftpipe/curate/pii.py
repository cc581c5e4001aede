"""pii: find personal data in every message and replace it with typed placeholders ([EMAIL], [PHONE], ...).

Recognizers (in priority order when spans overlap): EMAIL (regex), IP (regex, checked by `ipaddress`),
CARD (13-19 digits that pass the Luhn check), SSN (ddd-dd-dddd, valid ranges), PHONE (Google's
libphonenumber via `phonenumbers`: valid numbers, or possible ones written in a phone layout), ADDRESS (US-style
street addresses: number, street name, street type, optional unit, city, state and US/UK/IE/PT postcode)
and PERSON (US Census name lists plus cues: titles, "my name is", greetings and sign-offs). Cards must also
start with 2-6 and no number right after "order", "ref", "code" etc. counts as a card or phone. Presidio was
not used: it needs spaCy and a downloaded NER model for names and addresses; regex-only, it finds neither.

After redaction every value detected in a record is also replaced wherever else it occurs in that record,
so no detected value is left behind.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import phonenumbers

from ..conversation import Conversation
from .base import Drop, Outcome, RecordStage
from .config import PII_TYPES, PiiConfig

_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.]*\d)")
_IPV6 = re.compile(r"(?<![\w:.])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?![\w:])")  # checked by ipaddress
_CARD = re.compile(r"(?<![\w-])(?:\d[ -]?){12,18}\d(?![\w-])")
_SSN = re.compile(r"(?<![\w-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\w-])")
_PHONE_LAYOUT = re.compile(r"^\+|^\(?\d{3}\)?[\s.-]\d{3}[\s.-]\d{4}$|^\d{3,5}[\s.-]\d{3,4}[\s.-]?\d{3,4}$")
_ID_BEFORE = re.compile(r"(?:#|[A-Za-z]-|(?i:order|ref|reference|ticket|invoice|tracking|case|id|no\.?|code|coupon|"
                        r"voucher|promo)(?:\s+(?:number|no\.?|id|code|#))?(?:\s+is)?\s*[:#]?\s*)$")
_STREET_TYPES = ("Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|Terrace|Ter|"
                 "Circle|Cir|Parkway|Pkwy|Highway|Hwy|Square|Sq|Trail|Trl|Crescent|Close")
_ADDRESS = re.compile(
    r"(?<![\w-])\d{1,6}[A-Za-z]?\s+(?:[NSEW]\.?\s+)?(?:[A-Za-z][A-Za-z'.-]*\s+){0,3}(?i:" + _STREET_TYPES + r")\b\.?"
    r"(?:,?\s*(?i:apt|apartment|suite|ste|unit|#)\.?\s*#?[\w-]+)?"
    r"(?:,\s*[A-Z][A-Za-z]+\b(?:\s[A-Z][A-Za-z]+\b){0,2})?(?:,?\s*[A-Z]{2}\b)?"
    # postcode: US ZIP, Portuguese, UK, Irish Eircode
    r"(?:,?\s+(?:\d{5}(?:-\d{4})?|\d{4}-\d{3}|[A-Z]{1,2}\d[A-Z\d]?\s?\d[A-Z]{2}|[A-Z]\d{2}\s?[A-Z\d]{4})\b)?")
_CAP = r"[A-Z][a-z]+(?:['’-][A-Z]?[a-z]+)*"
_TITLE = re.compile(rf"\b(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof)\.?\s+({_CAP}(?:[ \t]+{_CAP})?)")
_STRONG_CUE = re.compile(rf"(?i:\b(?:my name is|my name's|name\s*:|call me|signed,?))[ \t]+({_CAP}(?:[ \t]+{_CAP})?)")
_SELF_CUE = re.compile(rf"(?i:\b(?:this is|i am|i'm|i’m)),?[ \t]+({_CAP})(?:[ \t]+({_CAP}))?")
_GREETING_CUE = re.compile(rf"(?i:\b(?:hi|hello|hey|dear|thanks|thank you|regards|best|cheers|sincerely|"
                           rf"kind regards|best regards|best wishes)),?\s+({_CAP})(?:[ \t]+({_CAP}))?")
_NAME_PAIR = re.compile(rf"\b({_CAP})(?:[ \t]+({_CAP}))?\b")
# Capitalized words that are never names here, whatever the name lists say.
_STOP = frozenset("""Harbor Harbour Support Customer Customers Order Orders Refund Refunds Thank Thanks Hello Hi Hey
Dear Best Regards Kind Warm Sincerely Cheers Team Agent Sir Madam Welcome Please Sorry Happy Glad Here Just Sure Yes
No Okay Ok Still Also My Me Mine The This That These Those There They Their Them Your You We Our Us It Its And
But Or For With
Hope Let Can Could Would Should Will Shall May Might Must Do Does Did Done Have Has Had Is Are Was Were Be Been What
When Where Why How Which Who Whom Whose Not Any Some All Everyone Everybody Anyone Again So Much Mate Wishes Guys
Folks Friend Friends Both Anyway In On At To From By Of As If Then Now Today Tomorrow Yesterday Soon Great Good
Perfect Awesome Wonderful Appreciate Got Noted Understood Account Payment Card Delivery Shipping Package Parcel
Tracking Item Items Product Service Help Update Info Information Note Regarding Re Subject Dept Department Manager
Store Shop Online Email Phone Address Again Bye Goodbye Morning Afternoon Evening Night Everything Nothing Another
Other One Two Three First Last Next New Old Mr Mrs Ms Miss Dr""".split())


@dataclass(frozen=True)
class Span:
    """One detected value: character offsets into the text, its type and the text itself."""

    start: int
    end: int
    type: str
    value: str


@lru_cache(maxsize=1)
def _names() -> tuple[frozenset, frozenset, frozenset]:
    """(first names, last names, ambiguous first names) from the shipped lists."""
    def words(name: str) -> frozenset:
        text = resources.files("sftpipe.curate").joinpath("data", name).read_text(encoding="utf-8")
        return frozenset(w for line in text.splitlines() if not line.startswith("#") for w in line.split())
    return words("first_names.txt"), words("last_names.txt"), words("ambiguous_first_names.txt")


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
    if sum(ch.isdigit() for ch in text) < 7:
        return []
    out = []
    for m in phonenumbers.PhoneNumberMatcher(text, region, leniency=phonenumbers.Leniency.POSSIBLE):
        raw = m.raw_string
        if _ID_BEFORE.search(text[max(0, m.start - 16):m.start]):
            continue  # an order / ticket number, not a phone
        if phonenumbers.is_valid_number(m.number) or _PHONE_LAYOUT.search(raw):
            out.append(Span(m.start, m.end, "PHONE", raw))
    return out


def _person_spans(text: str) -> list[Span]:
    first, last, ambiguous = _names()
    out = []

    def add(m: re.Match, group: int = 1, end_group: int | None = None) -> None:
        end = m.end(end_group) if end_group and m.group(end_group) else m.end(group)
        out.append(Span(m.start(group), end, "PERSON", text[m.start(group):end]))

    for rx in (_TITLE, _STRONG_CUE):
        for m in rx.finditer(text):
            if m.group(1).split()[0] not in _STOP:
                add(m)
    for rx in (_SELF_CUE, _GREETING_CUE):  # after "I'm", a known first name; after a greeting, any name
        for m in rx.finditer(text):
            name, surname = m.group(1), m.group(2)
            known = name in first or (surname is not None and surname in last)
            full = surname is not None and surname not in _STOP and m.group(0)[:4].lower() == "this"
            if name not in _STOP and (known or full or rx is _GREETING_CUE):
                add(m, 1, 2 if surname and surname not in _STOP else None)
    for m in _NAME_PAIR.finditer(text):
        name, surname = m.group(1), m.group(2)
        if name in _STOP:
            continue
        if surname and surname in last and surname not in _STOP:  # "Soren Silva": a known surname is enough
            add(m, 1, 2)
        elif name in first and name not in ambiguous and len(name) > 2:
            add(m, 1, 2 if surname and surname not in _STOP else None)
    return out


def find_pii(text: str, types: tuple[str, ...] | list[str] = PII_TYPES, region: str = "US") -> list[Span]:
    """All PII spans in `text`, sorted and non-overlapping (higher-priority recognizers win).

    >>> [(s.type, s.value) for s in find_pii("Mail jo@x.org or call (415) 555-0132, Mr. Alvarez.")]
    [('EMAIL', 'jo@x.org'), ('PHONE', '(415) 555-0132'), ('PERSON', 'Alvarez')]
    """
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
        found += [Span(m.start(), m.end(), "ADDRESS", m.group().rstrip(", ")) for m in _ADDRESS.finditer(text)]
    if "PERSON" in types:
        found += _person_spans(text)
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
