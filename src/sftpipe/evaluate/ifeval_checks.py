"""IFEval instruction checkers: one small function per instruction id, strict semantics as in the paper.

Semantics follow the reference implementation (google-research `instruction_following_eval/instructions.py`,
Zhou et al. 2023): "less than" means count < N, "at least" means count >= N, keyword and letter matching is
case-insensitive. Two documented departures, to avoid nltk and its data downloads:
- sentences are counted with `split_sentences` (terminal punctuation, see there) instead of nltk punkt;
- words for `change_case:capital_word_frequency` come from a regex instead of `nltk.word_tokenize`.
Language is detected with `langdetect` (as upstream) on the raw text, seeded for determinism; text it cannot
classify counts as followed, as upstream does. Like upstream, this reads most upper-case Latin text as English.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from functools import lru_cache

CHECKERS: dict[str, Callable[..., bool]] = {}
RELATIONS = ("less than", "at least")
CONSTRAINED_OPTIONS = ("My answer is yes.", "My answer is no.", "My answer is maybe.")

_ABBREVIATIONS = {"mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "e.g", "i.e", "inc", "ltd",
                  "co", "no", "fig", "approx", "capt", "lt", "ph.d", "u.s", "a.m", "p.m"}
_TERMINAL = re.compile(r"[.!?]+[\"'\u201d\u2019)\]]*(?=\s|$)")
_LAST_WORD = re.compile(r"([\w.]+)$")


def _checker(instruction_id: str):
    def register(fn: Callable[..., bool]) -> Callable[..., bool]:
        CHECKERS[instruction_id] = fn
        return fn
    return register


def _compare(count: int, relation: str, threshold: int) -> bool:
    if relation == "less than":
        return count < threshold
    if relation == "at least":
        return count >= threshold
    raise ValueError(f"relation {relation!r} is not one of {RELATIONS}")


def split_sentences(text: str) -> list[str]:
    """Split at `.`, `!` or `?` (plus closing quotes/brackets) followed by whitespace or the end of the text.

    A period after a known abbreviation (Mr., e.g., etc.) or a single-letter initial does not end a sentence;
    newlines alone do not either (as with nltk punkt). Pieces without a word character are dropped.

    >>> split_sentences("Dr. Smith arrived. Was it 3.5 hours late? Yes!")
    ['Dr. Smith arrived.', 'Was it 3.5 hours late?', 'Yes!']
    """
    pieces, start = [], 0
    for m in _TERMINAL.finditer(text):
        last = _LAST_WORD.search(text, start, m.start())
        word = last.group(1).lower() if last else ""
        if m.group().startswith(".") and len(m.group().rstrip("\"'\u201d\u2019)]")) == 1 and (
                word in _ABBREVIATIONS or (len(word) == 1 and word.isalpha())):
            continue
        pieces.append(text[start:m.end()].strip())
        start = m.end()
    pieces.append(text[start:].strip())
    return [p for p in pieces if re.search(r"\w", p)]


def count_words(text: str) -> int:
    """Number of `\\w+` runs (upstream's nltk RegexpTokenizer(r"\\w+") does the same)."""
    return len(re.findall(r"\w+", text))


@lru_cache(maxsize=4096)
def detect_language(text: str) -> str | None:
    """ISO 639-1 code from langdetect (seeded, deterministic), or None if it cannot tell."""
    from langdetect import DetectorFactory, LangDetectException, detect

    DetectorFactory.seed = 0
    try:
        return detect(text)
    except LangDetectException:
        return None


# --- keywords ---------------------------------------------------------------------------------------------

@_checker("keywords:existence")
def _existence(response: str, *, keywords: list[str]) -> bool:
    return all(re.search(re.escape(k), response, re.IGNORECASE) for k in keywords)


@_checker("keywords:frequency")
def _frequency(response: str, *, keyword: str, frequency: int, relation: str) -> bool:
    count = len(re.findall(re.escape(keyword.strip()), response, re.IGNORECASE))
    return _compare(count, relation, frequency)


@_checker("keywords:forbidden_words")
def _forbidden(response: str, *, forbidden_words: list[str]) -> bool:
    return not any(re.search(rf"\b{re.escape(w)}\b", response, re.IGNORECASE) for w in forbidden_words)


@_checker("keywords:letter_frequency")
def _letter_frequency(response: str, *, letter: str, let_frequency: int, let_relation: str) -> bool:
    return _compare(response.lower().count(letter.strip().lower()), let_relation, let_frequency)


# --- language and case --------------------------------------------------------------------------------------

@_checker("language:response_language")
def _language(response: str, *, language: str) -> bool:
    return detect_language(response) in (language, None)


@_checker("change_case:english_capital")
def _english_capital(response: str) -> bool:
    return response.isupper() and detect_language(response) in ("en", None)


@_checker("change_case:english_lowercase")
def _english_lowercase(response: str) -> bool:
    return response.islower() and detect_language(response) in ("en", None)


@_checker("change_case:capital_word_frequency")
def _capital_words(response: str, *, capital_frequency: int, capital_relation: str) -> bool:
    words = re.findall(r"\w+(?:[-'\u2019]\w+)*", response)  # hyphenated words count once
    return _compare(sum(w.isupper() for w in words), capital_relation, capital_frequency)


# --- length ---------------------------------------------------------------------------------------------

@_checker("length_constraints:number_sentences")
def _sentences(response: str, *, num_sentences: int, relation: str) -> bool:
    return _compare(len(split_sentences(response)), relation, num_sentences)


@_checker("length_constraints:number_words")
def _words(response: str, *, num_words: int, relation: str) -> bool:
    return _compare(count_words(response), relation, num_words)


@_checker("length_constraints:number_paragraphs")
def _paragraphs(response: str, *, num_paragraphs: int) -> bool:
    parts = re.split(r"\s?\*\*\*\s?", response)  # paragraphs are separated by the markdown divider ***
    count = len(parts)
    for i, part in enumerate(parts):
        if not part.strip():
            if i not in (0, len(parts) - 1):
                return False  # an empty paragraph between two dividers
            count -= 1
    return count == num_paragraphs


@_checker("length_constraints:nth_paragraph_first_word")
def _nth_first_word(response: str, *, num_paragraphs: int, nth_paragraph: int, first_word: str) -> bool:
    parts = response.split("\n\n")  # here paragraphs are separated by blank lines
    count = sum(1 for p in parts if p.strip())
    if not 1 <= nth_paragraph <= count:
        return False
    paragraph = parts[nth_paragraph - 1].strip()  # indexes the raw split, as upstream does
    if not paragraph:
        return False
    word = re.match(r"[^.,?!'\"]*", paragraph.split()[0].lstrip("'").lstrip('"')).group().lower()
    return count == num_paragraphs and word == first_word.lower()


# --- detectable content and format -------------------------------------------------------------------------

@_checker("detectable_content:number_placeholders")
def _placeholders(response: str, *, num_placeholders: int) -> bool:
    return len(re.findall(r"\[.*?\]", response)) >= num_placeholders


@_checker("detectable_content:postscript")
def _postscript(response: str, *, postscript_marker: str) -> bool:
    marker = postscript_marker.strip()
    if marker == "P.P.S":
        pattern = r"\s*p\.\s?p\.\s?s.*$"
    elif marker == "P.S.":
        pattern = r"\s*p\.\s?s\..*$"
    else:
        pattern = r"\s*" + re.escape(marker.lower()) + r".*$"
    return re.search(pattern, response.lower(), re.MULTILINE) is not None


@_checker("detectable_format:number_bullet_lists")
def _bullets(response: str, *, num_bullets: int) -> bool:
    stars = re.findall(r"^\s*\*[^\*].*$", response, re.MULTILINE)
    dashes = re.findall(r"^\s*-.*$", response, re.MULTILINE)
    return len(stars) + len(dashes) == num_bullets


@_checker("detectable_format:constrained_response")
def _constrained(response: str) -> bool:
    return any(option in response.strip() for option in CONSTRAINED_OPTIONS)


@_checker("detectable_format:number_highlighted_sections")
def _highlights(response: str, *, num_highlights: int) -> bool:
    single = [h for h in re.findall(r"\*[^\n\*]*\*", response) if h.strip("*").strip()]
    double = [h for h in re.findall(r"\*\*[^\n\*]*\*\*", response) if h[2:-2].strip()]
    return len(single) + len(double) >= num_highlights


@_checker("detectable_format:multiple_sections")
def _sections(response: str, *, section_spliter: str, num_sections: int) -> bool:
    parts = re.split(r"\s?" + re.escape(section_spliter.strip()) + r"\s?\d+\s?", response)
    return len(parts) - 1 >= num_sections


@_checker("detectable_format:json_format")
def _json_format(response: str) -> bool:
    value = response.strip()
    for prefix in ("```json", "```Json", "```JSON", "```"):
        value = value.removeprefix(prefix)
    value = value.removesuffix("```").strip()
    try:
        json.loads(value)
    except ValueError:
        return False
    return True


@_checker("detectable_format:title")
def _title(response: str) -> bool:
    return any(t.lstrip("<").rstrip(">").strip() for t in re.findall(r"<<[^\n]+>>", response))


# --- combination, start/end, punctuation --------------------------------------------------------------------

@_checker("combination:two_responses")
def _two_responses(response: str) -> bool:
    parts = response.split("******")
    kept = []
    for i, part in enumerate(parts):
        if part.strip():
            kept.append(part.strip())
        elif i not in (0, len(parts) - 1):
            return False
    return len(kept) == 2 and kept[0] != kept[1]


@_checker("combination:repeat_prompt")
def _repeat_prompt(response: str, *, prompt_to_repeat: str) -> bool:
    return response.strip().lower().startswith(prompt_to_repeat.strip().lower())


@_checker("startend:end_checker")
def _end_phrase(response: str, *, end_phrase: str) -> bool:
    return response.strip().strip('"').lower().endswith(end_phrase.strip().lower())


@_checker("startend:quotation")
def _quotation(response: str) -> bool:
    value = response.strip()
    return len(value) > 1 and value[0] == '"' and value[-1] == '"'


@_checker("punctuation:no_comma")
def _no_comma(response: str) -> bool:
    return "," not in response
