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
import unicodedata
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
_DIGIT = re.compile(r"\d")
_SEVEN_DIGITS = re.compile(r"\d(?:\D*\d){6}")
_ID_BEFORE = re.compile(r"(?:#|[A-Za-z]-|(?i:order|ref|reference|ticket|invoice|tracking|case|id|no\.?|code|coupon|"
                        r"voucher|promo)(?:\s+(?:number|no\.?|id|code|#))?(?:\s+is)?\s*[:#]?\s*)$")


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

# --- ADDRESS ---------------------------------------------------------------------------------------------------
_A_NUM = r"\d{1,5}[A-Za-z]?(?:[/-]\d{1,5}[A-Za-z]?)?"
_AW = rf"(?:{_UP}{_L}*(?:-{_L}+)*\.?|\d{{1,3}}(?:st|nd|rd|th))"  # a capitalised street-name word or an ordinal
_A_PART = r"(?:de[ \t]+la|de[ \t]+los|de[ \t]+las|de[ \t]+l['’]|d['’]|de|du|des|la|le|les|l['’]|del|della|dei|" \
          r"degli|delle|di|da|das|do|dos|los|las|el|y)"
_A_WORDS = rf"(?:{_A_PART}[ \t]*)?{_AW}(?:[ \t]+(?:{_A_PART}[ \t]*)?{_AW}){{0,3}}"
_A_EN_TYPES = ("Street|St|Avenue|Ave|Av|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|Terrace|Ter|"
               "Tce|Circle|Cir|Parkway|Pkwy|Highway|Hwy|Square|Sq|Trail|Trl|Crescent|Cres|Close|Row|Mews|Wynd|Walk|"
               "Gardens|Grove|Hill|Rise|Vale|View|Green|Parade|Pde|Esplanade|Quay|Wharf|Yard|Alley|Loop|Pike|Plaza|"
               "Path|Heights|Bend|Cove|Crossing|Strand|Embankment|Promenade|Causeway|Expressway|Freeway|Turnpike|"
               "Ridge|Run|Landing|Commons|Gate|Hollow|Meadows?|Park|Approach|Drove|Glen|Croft|Wood|Broadway")
_A_DIR = r"(?:N|S|E|W|NE|NW|SE|SW|North|South|East|West)"
_A_EN = rf"{_A_NUM},?[ \t]+(?:{_A_DIR}\.?[ \t]+)?(?:{_AW}[ \t]+){{1,4}}(?i:{_A_EN_TYPES})\b\.?" \
        rf"(?:[ \t]+(?:{_A_DIR}|Upper|Lower|Extension|Ext)\b)?|{_A_NUM},?[ \t]+{_UP}{_LO}+(?:way|gate)\b"
_A_FR = rf"{_A_NUM}(?:[ \t]?(?:bis|ter|quater))?,?[ \t]+(?i:rue|avenue|av\.|boulevard|bd|boul\.|place|allée|allee|" \
        rf"impasse|chemin|quai|cours|route|rte|passage|square|voie|sentier|rang|montée|côte|ruelle|promenade|" \
        rf"esplanade|faubourg|parvis|cité|hameau)[ \t]+{_A_WORDS}(?:[ \t]+(?:Ouest|Est|Nord|Sud))?"
_A_SUFFIX = r"(?i:straße|strasse|str\.|weg|gasse|platz|allee|damm|ufer|chaussee|graben|markt|gracht|straat|laan|" \
            r"plein|kade|singel|dijk|dreef|steeg|gatan|vägen|gata|gade|vej|veien|vegen|torget|katu|kuja)"
_A_DE_PREP = r"(?:Am|An der|An den|Im|In der|In den|Auf der|Auf dem|Unter den|Zum|Zur)[ \t]+"
_A_SF = (rf"(?:(?:{_A_DE_PREP})?{_UP}{_L}*(?:-{_L}+)*-?{_A_SUFFIX}|{_A_DE_PREP}{_AW}"
         rf"|(?:{_AW}[ \t]+){{1,3}}(?:Straße|Strasse|Str\.|Weg|Gasse|Platz|Allee|Ring|Damm|Ufer|gate|gata|vei|veien|"
         rf"vej|náměstí|nábřeží|třída|ulice|ulica|ulitsa|prospekt|pereulok|shosse|bulvar|naberezhnaya|ploshchad|"
         rf"vulytsia|utca|út|tér|iela|gatvė|tänav|sokak|sokağı|caddesi|cad\.)"
         rf"|(?:Calle|C/|Avenida|Avda\.?|Av\.|Paseo|Plaza|Carrer|Passeig|Plaça|Ronda|Camino|Carretera|Calzada|Via|"
         rf"Viale|Piazza|Piazzale|Corso|Largo|Vicolo|Strada|Rua|Travessa|Praça|Estrada|Alameda|Rodovia|Rue|Avenue|"
         rf"Boulevard|Chaussée|Place|Quai|ul\.|Ul\.|ulica|al\.|Aleja|Plac|Jirón)[ \t]+{_A_WORDS})"
         rf",?[ \t]+{_A_NUM}(?![\d.,]\d)")
_A_POST = r"(?:\d{3,5}-\d{3,4}|\d{5}|[A-Z]\d[A-Z][ \t]?\d[A-Z]\d|[A-Z]{1,2}\d[A-Z\d]?[ \t]?\d[A-Z]{2}|" \
          r"[A-Z]\d{2}[ \t]?[A-Z\d]{4}|\d{4}[ \t]?[A-Z]{2}|\d{2}-\d{3}|\d{3}[ \t]\d{2}|\d{4,6})(?![\w-])"
_A_CITY = rf"{_AW}(?:[ \t-]+(?:(?:de|do|da|del|la|le|los|upon|on|sur|am|an|im|bei)[ \t]+)?{_AW}){{0,3}}" \
          rf"(?:[ \t]+(?:\d{{1,2}}|[A-Z]))?(?![\w-])"
_A_UNIT = r"(?:(?:Apt|Apartment|Suite|Ste|Unit|Flat|Fl|Floor|Room|Rm|Bldg|Building|Dept|Box)\.?[ \t]*#?[ \t]*[\w-]+|" \
          r"#[ \t]?[\w-]+|\d{1,2}\.?[ \t]?[º°ªo](?:[ \t]?(?:[A-Z]|Esq|Dto|Dcha|Izq|Izda|Dta)\b\.?)?)"
_ADDRESS = re.compile(
    rf"(?<![\w/.-])(?=\d|{_UP}|ul\.|al\.|ulica)(?:(?P<en>{_A_EN})|(?P<fr>{_A_FR})|(?P<sf>{_A_SF})"
    rf"|(?P<gen>{_UP}{_LO}{{2,}}[ \t]+\d{{1,4}}[a-z]?(?=,[ \t]*(?:\d{{4,5}}|\d{{4}}[ \t]?[A-Z]{{2}})[ \t]+{_UP}))"
    rf"|(?P<jp>\d{{1,4}}-\d{{1,4}}(?:-\d{{1,4}})?[ \t]+{_UP}{_LO}+(?:-{_L}+)*(?=,))"
    rf"|(?P<box>(?:P\.?[ \t]?O\.?[ \t]?Box|Post Office Box|Postfach|Apartado(?: de Correos)?|Caixa Postal)"
    rf"[ \t]*\d{{1,6}}))"
    rf"|(?=[〒\u3400-\u9fff\u3040-\u30ff])(?P<cjk>(?:〒[ \t]?\d{{3}}-\d{{4}}[ \t]*)?[\u3400-\u9fff\u3040-\u30ff]*"
    rf"[都道府県省市区町村郡][\u3400-\u9fff\u3040-\u30ff]*\d+(?:[-－]\d+){{0,3}}[号番地]?)")  # 東京都渋谷区渋谷2-21-1
_A_TAIL = re.compile(rf"(?P<sep>,[ \t]*|[ \t]*\n[ \t]*|[ \t]+-[ \t]+|[ \t]+)"
                     rf"(?:(?P<unit>{_A_UNIT})|(?P<post>{_A_POST}(?:[ \t]+{_A_CITY})?)"
                     rf"|(?P<region>[A-Z]{{2,3}}(?![\w-]))|(?P<city>{_A_CITY}))")
_A_LEFT = re.compile(rf"(?:(?:Flat|Apt|Apartment|Unit|Suite|Ste|Room|Floor|Level)\.?[ \t]*#?[\w-]+,?[ \t]+)?"
                     rf"(?:{_AW}(?:[ \t]+{_AW}){{0,2}}[ \t]+(?:House|Court|Building|Apartments|Apts|Tower|Towers|"
                     rf"Mansions|Lodge|Hall|Block|Residences?|Heights|Centre|Center|Chambers|Cottage|Manor|Villas),?"
                     rf"[ \t]+)?\Z")
_A_CUE = re.compile(r"(?i:\b(?:address(?:\s+is)?|adresse|live[sd]?\s+at|living\s+at|(?:ship|deliver|send|sent|post|"
                    r"mail)(?:ped|ed)?(?:\s+it)?\s+to|moved\s+(?:from|to)|collect\s+from|i['’]m\s+at)\s*:?\s*)\Z")


def _address_spans(text: str) -> list[Span]:
    lex = _lexicon()
    stop, words = lex["stop"], lex["word"]
    if not _DIGIT.search(text):
        return []
    out = []
    for m in _ADDRESS.finditer(text):
        start, end, kind = m.start(), m.end(), m.lastgroup
        parts = 0
        while parts < 6 and (t := _A_TAIL.match(text, end)):
            part = t.group(t.lastgroup)
            if t.lastgroup == "city" and ("\n" not in t["sep"] and not t["sep"].strip(" \t")
                                          or part.split()[0] in stop):
                break  # a city follows a comma or a dash, and is no greeting or "Please"
            line_end = text.find("\n", t.end())
            if "\n" in t["sep"] and not _DIGIT.search(part + text[t.end():line_end if line_end >= 0 else len(text)]):
                break  # on a new line only a line with a postcode belongs to the address
            end, parts = t.end(), parts + 1
        if kind == "gen" and (m.group().split()[0].lower() in words or m.group().split()[0] in stop):
            continue  # "Chapter 11, 2024 ...": a street needs a name, not a word
        if kind in ("fr", "jp") and not parts and not _A_CUE.search(text, max(0, start - 40), start):
            continue  # "24 Rue Cler postcards": a French street needs a city, a postcode or "ship to"
        if kind in ("en", "fr", "sf", "jp") and (left := _A_LEFT.search(text, max(0, start - 80), start)):
            start = left.start()
        while text[end - 1] in ".,;:":
            end -= 1  # the sentence's full stop is not part of the address
        out.append(Span(start, end, "ADDRESS", text[start:end]))
    return out


# --- PERSON ----------------------------------------------------------------------------------------------------
_TOK = rf"(?:[AaEe]l-|[Dd]['’])?{_UP}{_L}*(?:['’](?:{_UP}|{_LO}{{3}}){_L}*)?(?:-{_L}+)*"  # not "I've"
_PART = r"(?:van|von|der|den|de|del|della|dei|di|da|das|do|dos|du|des|la|le|los|las|ter|ten|te|bin|binti|bint|ibn|" \
        r"al|el|y|zu|vom|zum|ap)"
_RUNS = re.compile(rf"(?<![\w@.#/-])(?:{_TOK}(?:[ \t]+(?:{_PART}[ \t]+){{0,2}}(?:{_UP}\.(?=[ \t]+{_UP})|{_TOK}))*"
                   rf"|{_CL}+(?:[ \t・·]{_CL}+){{0,3}})")
_TOKS = re.compile(rf"{_UP}\.|{_TOK}|{_CL}+")
_TITLES = r"Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Sir|Dame|Madam|Madame|Mme|Mlle|Monsieur|Herr|Frau|Sr|Sra|Srta|Señor|Señora|" \
          r"Sig|Sig\.ra|Dott|Dona|Dom|Mevrouw|Mevr|Dhr|Pan|Pani|Shri|Smt|Sri"
_CUES = [(name, re.compile(rf"(?:{body})\Z")) for name, body in (  # each ends where the name starts
    ("title", rf"\b(?:{_TITLES})\.?[ \t]+"),
    ("strong", r"(?i:\b(?:my name is|my name['’]s|name is|call me|i go by|signed|named|called)[ \t:,]+"
               r"|\b(?:name|full name|first name|last name|surname|customer|account holder|account name|contact|"
               r"attn|attention|recipient|from|to|cc)[ \t]*:[ \t]*\n?[ \t]*)"),
    ("self", r"(?i:\b(?:i['’]m|im|i am|this is|it['’]s|here is|here['’]s)[ \t]*,?[ \t]+)"),
    ("greet", r"(?i:\b(?:hi|hello|hey|hiya|heya|dear|greetings|morning|good (?:morning|afternoon|evening|day)|"
              r"welcome|thanks|thank you|thx|many thanks|cheers|regards|best|sincerely|kind regards|best regards|"
              r"warm regards|warmest regards|best wishes|all the best|warmly|respectfully|"
              r"yours(?: truly| sincerely| faithfully)?|take care|love|ta|bye|goodbye|sorry|congrats|congratulations)"
              r"(?:[ \t]+(?:again|so much|a lot|all|in advance|very much|there))?"
              r"(?:[ \t]*,?[ \t]*|[ \t]*[,!.:;]*[ \t]*(?:\n[ \t]*){1,2})"  # "Thanks. Mark this" is no cue
              r"|\b(?:hi|hello|hey|thanks|thank you|sorry|dear|good (?:morning|afternoon|evening))\b[^.!?\n]{0,40},"
              r"[ \t]*)"),
    ("weak", r"(?i:\b(?:ask|asking|tell|contact|call|email|text|message|cc|let|agent|colleague|husband|wife|partner|"
             r"son|daughter|mother|mum|mom|father|dad|brother|sister|friend|neighbou?r|flatmate|roommate|housemate|"
             r"boss|manager|landlord|landlady|tenant|uncle|aunt|cousin|grandma|grandmother|grandfather|grandpa|"
             r"nephew|niece|fianc[ée]e?|spouse|(?:spoke|speak|speaking|spoken|talked|talk|talking|chatted) "
             r"(?:to|with)|signed for by|addressed to|on behalf of|care of|c/o)[ \t]*,?[ \t]+)"),
    ("dash", r"(?:^|\n)[ \t]*(?:--?|—|–|~)[ \t]*"),
    ("alias", r"\([ \t]*"))]
_DETERMINER = re.compile(r"(?i:\b(?:the|a|an|my|your|our|their|his|her|its|this|that|these|those|each|every|some|"
                         r"any|no|new|old)[ \t]+)\Z")
_HERE = re.compile(r"[ \t]+here\b")
_BLANK_REST = re.compile(r"\s*\Z")
_CLAUSE_START = re.compile(r"(?:^|[.!?,;:(]|\n)[ \t]*\Z")
_STAFF = re.compile(r"(?i:(?:[ \t]+here)?(?:[ \t]*\([ \t]*|[ \t]*,?[ \t]*(?:from|at|with|of|on)[ \t]+(?:the[ \t]+)?|"
                    r"[ \t]*\n[ \t]*)(?:[\w'’&-]+[ \t]+){0,3}?(?:support|team|care|service|services|helpdesk|desk)\b)")
_SIGNOFF = re.compile(r"(?i)(?:thanks|thank you|regards|best|cheers|sincerely|yours|warmly|respectfully|take care|"
                      r"love|ta|kind regards|best wishes|all the best)\b")
_SURNAME_END = re.compile(r"(?:ski|ska|cki|cka|dzki|dzka|wicz|czyk|czak|iak|iec|enko|chuk|czuk|yuk|iuk|ovich|evich|"
                          r"ović|ević|ovic|evic|poulos|poulou|akis|idis|iadis|yan|shvili|dze|escu|eanu|oğlu|oglu|"
                          r"zadeh|sson|ssen|dóttir|dottir|moto|mura|yama|kawa|gawa|shita|zaki|saki|guchi|bayashi|"
                          r"uddin|ullah|wala|walla|ov|ova|ev|eva)\Z")  # family-name endings of many languages
_PLACE_PREFIX = frozenset({"San", "Santa", "Santo", "São", "Sao", "Saint", "St", "Ste", "Fort", "Port", "Mount", "Mt",
                           "Lake", "New", "North", "South", "East", "West", "Upper", "Lower", "Great", "Little",
                           "Royal", "Old", "Los", "Las", "Bad", "Sankt"})  # "San Carlos" is a place


@dataclass(frozen=True)
class Span:
    """One detected value: character offsets into the text, its type and the text itself."""

    start: int
    end: int
    type: str
    value: str


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


@lru_cache(maxsize=65536)
def _token(tok: str) -> tuple[bool, bool, bool, bool, bool]:
    """(breaks a name, known first name, known or surname-shaped last name, English word, place) for one token."""
    lex = _lexicon()
    if tok[0] in "AaEeDd" and tok[1:2] in "l'’-" and len(tok) > 3 and not tok[1:3].isalpha():
        parts = [tok] + re.split(r"['’-]", tok)[1:]  # al-Farsi, d'Angelo
    else:
        parts = [tok] + (tok.split("-") if "-" in tok else [])
    first = any(p in lex["first"] for p in parts)
    word = (tok.lower() in lex["word"] or tok in lex["ambiguous"]
            or "-" in tok and all(p.lower() in lex["word"] for p in tok.split("-")))
    last = any(p in lex["last"] for p in parts) or not word and len(tok) > 4 and bool(_SURNAME_END.search(tok))
    stop = (tok in lex["stop"] or tok in _PLACE_PREFIX or len(tok) == 1 or tok.isupper()  # "I", "ASAP"
            or word and not first and not last)
    return stop, first, last, word, tok in lex["place"]


def _cue(text: str, start: int, last_end: int) -> str | None:
    """The kind of cue that ends right before `start`, or None."""
    lo = max(0, start - 60)
    for name, rx in _CUES:
        m = rx.search(text, lo, start)
        if m and (name != "alias" or text[last_end:m.start()].strip() == ""):
            return name
    return None


def _signature_line(text: str, start: int, end: int) -> bool:
    """True if the name fills its line and follows a sign-off, a line ending in ',', ':' or '!', or ends the text."""
    ls = text.rfind("\n", 0, start) + 1
    le = text.find("\n", end)
    le = len(text) if le < 0 else le
    if not ls or text[ls:start].strip(" \t-—–~") or text[end:le].strip(" \t.,!"):
        return False
    prev = text[max(0, ls - 200):ls].rstrip().rsplit("\n", 1)[-1].strip()
    return bool(prev) and (prev[-1] in ",:!" or bool(_SIGNOFF.match(prev)) or bool(_BLANK_REST.match(text, le)))


def _person_spans(text: str) -> list[Span]:
    out: list[Span] = []
    last_end = -1
    for run in _RUNS.finditer(text):
        toks = [(t.start(), t.end(), t.group()) for t in _TOKS.finditer(text, run.start(), run.end())]
        info = [_token(w) if w[0].isupper() and not w.endswith(".") else (False,) * 5 for _, _, w in toks]
        i = 0
        while i < len(toks):
            if info[i][0] or toks[i][2].endswith("."):
                i += 1
                continue
            j = i
            while j + 1 < len(toks) and not info[j + 1][0]:
                j += 1
            seg, seg_info = toks[i:j + 1], info[i:j + 1]
            while seg and seg[-1][2].endswith("."):  # no name ends with an initial
                seg, seg_info = seg[:-1], seg_info[:-1]
            if seg:
                span = _judge(text, seg, seg_info, toks[i - 1][2] if i else None, j + 1 < len(toks), last_end)
                if span is None and len(seg) > 1 and seg_info[0][3]:  # "Call Chloé": a verb that is also a surname
                    span = _judge(text, seg[1:], seg_info[1:], seg[0][2], j + 1 < len(toks), last_end)
                if span:
                    out.append(span)
                    last_end = span.end
            i = j + 1
    return out


def _judge(text: str, seg, info, prev_tok: str | None, more: bool, last_end: int) -> Span | None:
    """Decide whether one run of name-like tokens is a person's name (see the module docstring)."""
    start, end = seg[0][0], seg[-1][1]
    cue = _cue(text, start, last_end)
    if cue is None and _HERE.match(text, end) and _CLAUSE_START.search(text, max(0, start - 40), start):
        cue = "here"
    if cue is None and _signature_line(text, start, end):
        cue = "sig"
    scripts = [not t[2][0].isupper() for t in seg]
    if cue:
        _, first, last, word, place = info[0]
        if not scripts[0] and (cue not in ("title", "greet") and place and not (first or last)
                               or cue != "title" and word and not first and len(seg) == 1):
            return None  # "I'm American"; "Hi! Quick question" (a surname that is also a word needs a title)
        if len(seg) == 1 and cue in ("self", "here", "sig", "greet", "dash") and _STAFF.match(text, end):
            return None  # "Carlos here from Harbor Support": the company's agent, not a customer
        end = seg[min(len(seg), 5) - 1][1]
        return Span(start, end, "PERSON", text[start:end])
    if any(scripts) or more or (prev_tok and prev_tok in _PLACE_PREFIX):
        return None
    if _DETERMINER.search(text, max(0, start - 12), start) or re.match(r"[ \t]+\d", text[end:end + 3]):
        return None  # "my Stanley cup", "Jordan 4"
    lex = _lexicon()
    strong = [(f or la) and not w and len(t[2]) > 2 for t, (_, f, la, w, _) in zip(seg, info)]
    if info[0][4] and (len(seg) == 1 or not info[-1][2]) or any(p and not (f or la) for _, f, la, _, p in info):
        return None  # "in Austin", "Santiago is two hours ahead"
    if len(seg) == 1:
        ok = info[0][1] and strong[0] and seg[0][2] not in lex["ambiguous"]
    else:
        ok = any(strong) and (info[0][1] or info[-1][2]) and not any(w and not (f or la) for _, f, la, w, _ in info)
    return Span(start, end, "PERSON", text[start:end]) if ok else None


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
    if not _SEVEN_DIGITS.search(text):
        return []
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
