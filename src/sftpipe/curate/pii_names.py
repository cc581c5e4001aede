"""PERSON spans: runs of capitalised (or caseless-script) words judged by cues, name lists and the English word
list (see sftpipe.curate.pii for the whole description)."""

from __future__ import annotations

import re
from functools import lru_cache

from .pii_scripts import _CL, _L, _LO, _UP, Span, _lexicon

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
