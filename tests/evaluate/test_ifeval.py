import doctest
import hashlib
import json
from importlib import resources
from pathlib import Path

import pytest

from sftpipe.evaluate import ifeval_checks
from sftpipe.evaluate.ifeval import IFEVAL_SHA256, IFEvalItem, check_instruction, evaluate_ifeval, load_ifeval
from sftpipe.evaluate.ifeval_checks import CHECKERS, split_sentences

SHARED_COPY = Path(__file__).resolve().parents[3] / "shared" / "data" / "ifeval" / "input_data.jsonl"
DATA = resources.files("sftpipe.evaluate") / "data"

ITEMS = load_ifeval()
FILE_IDS = sorted({iid for item in ITEMS for iid in item.instruction_id_list})

RU = "Привет! Сегодня хорошая погода, и мы пойдём гулять в парк с друзьями."
IT = "Ciao, come stai? Oggi è una bella giornata e andiamo al mare con gli amici."
EN_UPPER = "THIS IS A LONG ANSWER WRITTEN IN ENGLISH ABOUT THE WEATHER TODAY AND WHAT WE WILL DO TOMORROW."
# langdetect (like upstream, which calls it on the raw text) reads most upper-case Latin text as English, so the
# non-English upper-case negative is Cyrillic
RU_UPPER = "ЭТО ДЛИННЫЙ ОТВЕТ НА РУССКОМ ЯЗЫКЕ О ПОГОДЕ СЕГОДНЯ И О ТОМ, ЧТО МЫ БУДЕМ ДЕЛАТЬ ЗАВТРА."
EN_LOWER = "this is a long answer written in english about the weather today and what we will do tomorrow."
FR_LOWER = "ceci est une réponse entièrement en français sur le temps qu'il fait aujourd'hui et demain matin."
END = "Is there anything else I can help with?"

# (instruction id, kwargs, response, followed?) -- at least one True and one False case per instruction id
CASES = [
    ("keywords:existence", {"keywords": ["remainder", "batteries"]}, "The Remainder of the BATTERIES.", True),
    ("keywords:existence", {"keywords": ["remainder", "batteries"]}, "The batteries are charged.", False),
    ("keywords:frequency", {"relation": "at least", "keyword": "flesh", "frequency": 2}, "Flesh, fleshy.", True),
    ("keywords:frequency", {"relation": "at least", "keyword": "flesh", "frequency": 2}, "Flesh only.", False),
    ("keywords:frequency", {"relation": "less than", "keyword": "bad", "frequency": 2}, "A bad day.", True),
    ("keywords:frequency", {"relation": "less than", "keyword": "bad", "frequency": 2}, "Bad, BAD day.", False),
    ("keywords:forbidden_words", {"forbidden_words": ["free", "reschedule"]}, "Freedom matters.", True),
    ("keywords:forbidden_words", {"forbidden_words": ["free", "reschedule"]}, "It is FREE.", False),
    ("keywords:letter_frequency", {"letter": "q", "let_frequency": 2, "let_relation": "less than"}, "quick", True),
    ("keywords:letter_frequency", {"letter": "q", "let_frequency": 2, "let_relation": "less than"}, "Quick quiz",
     False),
    ("keywords:letter_frequency", {"letter": "!", "let_frequency": 3, "let_relation": "at least"}, "Hi!!!", True),
    ("keywords:letter_frequency", {"letter": "!", "let_frequency": 3, "let_relation": "at least"}, "Hi!!", False),
    ("language:response_language", {"language": "ru"}, RU, True),
    ("language:response_language", {"language": "it"}, IT, True),
    ("language:response_language", {"language": "ru"}, EN_LOWER, False),
    ("language:response_language", {"language": "it"}, RU, False),
    ("length_constraints:number_sentences", {"num_sentences": 3, "relation": "less than"}, "One. Two!", True),
    ("length_constraints:number_sentences", {"num_sentences": 3, "relation": "less than"}, "One. Two? Three.",
     False),
    ("length_constraints:number_sentences", {"num_sentences": 3, "relation": "at least"},
     "It rained. We stayed in! Why not?", True),
    ("length_constraints:number_sentences", {"num_sentences": 3, "relation": "at least"},
     "Dr. Smith met Mr. Jones at 3.5 p.m. today. They talked.", False),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 3}, "One.\n***\nTwo.\n***\nThree.\n***\n", True),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 3}, "One.\n***\n\n***\nThree.", False),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 3}, "One.\n***\nTwo.", False),
    ("length_constraints:number_words", {"num_words": 300, "relation": "at least"}, "word " * 300, True),
    ("length_constraints:number_words", {"num_words": 300, "relation": "at least"}, "word " * 299, False),
    ("length_constraints:number_words", {"num_words": 5, "relation": "less than"}, "one two-three four", True),
    ("length_constraints:number_words", {"num_words": 5, "relation": "less than"}, "one two three four five",
     False),
    ("length_constraints:nth_paragraph_first_word", {"num_paragraphs": 3, "nth_paragraph": 2,
                                                     "first_word": "president"},
     "Intro.\n\n\"President Lincoln, then.\"\n\nThe end.", True),
    ("length_constraints:nth_paragraph_first_word", {"num_paragraphs": 3, "nth_paragraph": 2,
                                                     "first_word": "president"},
     "Intro.\n\nThe president spoke.\n\nThe end.", False),
    ("length_constraints:nth_paragraph_first_word", {"num_paragraphs": 3, "nth_paragraph": 2,
                                                     "first_word": "president"},
     "Intro.\n\nPresident Lincoln.", False),
    ("detectable_content:number_placeholders", {"num_placeholders": 2}, "Dear [name], at [address].", True),
    ("detectable_content:number_placeholders", {"num_placeholders": 2}, "Dear [name], at home.", False),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "Hi.\n\nP.S. See you soon.", True),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "Hi.\n\nPS see you soon.", False),
    ("detectable_content:postscript", {"postscript_marker": "P.P.S"}, "Hi.\nP.S. a\nP.P.S b", True),
    ("detectable_content:postscript", {"postscript_marker": "P.P.S"}, "Hi.\nP.S. only one", False),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "Intro\n* first\n- second", True),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "* first\n* second\n* third", False),
    ("detectable_format:constrained_response", {}, "I thought about it. My answer is maybe.", True),
    ("detectable_format:constrained_response", {}, "Yes.", False),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2}, "*one* and **two**", True),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2}, "*one* and ** ** and *", False),
    ("detectable_format:multiple_sections", {"section_spliter": "Section", "num_sections": 2},
     "Section 1\nfoo\nSection 2\nbar", True),
    ("detectable_format:multiple_sections", {"section_spliter": "Section", "num_sections": 2},
     "Section 1\nfoo\nsection 2\nbar", False),
    ("detectable_format:json_format", {}, '```json\n{"a": [1, 2]}\n```', True),
    ("detectable_format:json_format", {}, 'Here you go: {"a": 1}', False),
    ("detectable_format:title", {}, "<<Ode to Joy>>\nLines.", True),
    ("detectable_format:title", {}, "<<  >>\n<<broken\ntitle>>", False),
    ("combination:two_responses", {}, "First answer.\n******\nSecond answer.", True),
    ("combination:two_responses", {}, "Same.\n******\nSame.", False),
    ("combination:two_responses", {}, "A\n******\n******\nB", False),
    ("combination:repeat_prompt", {"prompt_to_repeat": "Write a poem about cats."},
     "write a poem about cats. Cats purr softly.", True),
    ("combination:repeat_prompt", {"prompt_to_repeat": "Write a poem about cats."},
     "Sure! Write a poem about cats.", False),
    ("startend:end_checker", {"end_phrase": END}, f'"All done. {END}"\n', True),
    ("startend:end_checker", {"end_phrase": END}, f"All done. {END} Bye.", False),
    ("startend:quotation", {}, ' "Wrapped, fully." ', True),
    ("startend:quotation", {}, 'Not "wrapped"', False),
    ("change_case:capital_word_frequency", {"capital_frequency": 3, "capital_relation": "at least"},
     "NASA and the FBI met the CIA-LIAISON.", True),
    ("change_case:capital_word_frequency", {"capital_frequency": 3, "capital_relation": "at least"},
     "NASA and the FBI met.", False),
    ("change_case:capital_word_frequency", {"capital_frequency": 2, "capital_relation": "less than"},
     "Only NASA here.", True),
    ("change_case:capital_word_frequency", {"capital_frequency": 2, "capital_relation": "less than"},
     "NASA and ESA.", False),
    ("change_case:english_capital", {}, EN_UPPER, True),
    ("change_case:english_capital", {}, EN_UPPER.capitalize(), False),
    ("change_case:english_capital", {}, RU_UPPER, False),
    ("change_case:english_lowercase", {}, EN_LOWER, True),
    ("change_case:english_lowercase", {}, EN_LOWER.capitalize(), False),
    ("change_case:english_lowercase", {}, FR_LOWER, False),
    ("punctuation:no_comma", {}, "No commas here. None at all!", True),
    ("punctuation:no_comma", {}, "Well, one.", False),
]


@pytest.mark.parametrize("iid,kwargs,response,expected", CASES, ids=[f"{c[0]}-{c[3]}-{i}" for i, c in
                                                                     enumerate(CASES)])
def test_checker_cases(iid, kwargs, response, expected):
    assert check_instruction(iid, response, kwargs, prompt="(prompt)") is expected


def test_cases_cover_every_instruction_both_ways():
    for iid in FILE_IDS:
        outcomes = {c[3] for c in CASES if c[0] == iid}
        assert outcomes == {True, False}, f"{iid} needs a positive and a negative case"


def test_every_instruction_in_the_file_has_a_checker():
    assert len(FILE_IDS) == 25
    assert set(FILE_IDS) == set(CHECKERS)


def test_every_real_item_runs_with_its_kwargs():
    # exercises every kwargs shape in the file; an unexpected or missing key would raise ValueError
    for item in ITEMS:
        for iid, kw in zip(item.instruction_id_list, item.kwargs, strict=True):
            assert isinstance(check_instruction(iid, "A short answer.", kw, item.prompt), bool)


def test_repeat_prompt_with_real_item():
    item = next(i for i in ITEMS if i.instruction_id_list == ["combination:repeat_prompt"]
                or "combination:repeat_prompt" in i.instruction_id_list)
    kw = item.kwargs[item.instruction_id_list.index("combination:repeat_prompt")]
    assert kw["prompt_to_repeat"] in item.prompt
    assert check_instruction("combination:repeat_prompt", kw["prompt_to_repeat"] + "\nAnswer.", kw, item.prompt)
    assert not check_instruction("combination:repeat_prompt", "Answer first. " + kw["prompt_to_repeat"], kw,
                                 item.prompt)


def test_unknown_id_and_bad_kwargs_raise():
    with pytest.raises(ValueError, match=r"unknown IFEval instruction id 'keywords:nope'.*punctuation:no_comma"):
        check_instruction("keywords:nope", "x", {}, "p")
    with pytest.raises(ValueError, match=r"expected exactly \['num_words', 'relation'\]"):
        check_instruction("length_constraints:number_words", "x", {"num_words": 3}, "p")
    with pytest.raises(ValueError, match="relation 'at most'"):
        check_instruction("length_constraints:number_words", "x", {"num_words": 3, "relation": "at most"}, "p")


def test_none_kwargs_are_ignored_and_empty_response_fails():
    assert check_instruction("punctuation:no_comma", "fine", {"keywords": None}, "p")
    assert not check_instruction("punctuation:no_comma", "  \n ", {}, "p")


def test_split_sentences():
    assert split_sentences("Hello world. This is Mr. Smith.\nHe said \"hi.\" Then e.g. J. K. Rowling wrote! End") == [
        "Hello world.", "This is Mr. Smith.", 'He said "hi."', "Then e.g. J. K. Rowling wrote!", "End"]
    assert split_sentences("Wait... what?! Yes.") == ["Wait...", "what?!", "Yes."]
    assert split_sentences("") == [] and split_sentences("* * *") == []


def test_shipped_data_is_byte_exact():
    raw = (DATA / "ifeval_input_data.jsonl").read_bytes()
    assert hashlib.sha256(raw).hexdigest() == IFEVAL_SHA256 == (
        "67ffeee0fcb87c317c5b08a2de85557b4a7e96ada6178aa645b4954fe4b53d49")
    assert "19638399cc9e03623c5b9087a1d6fa8813974ce9" in (DATA / "NOTICE.md").read_text()
    if SHARED_COPY.exists():
        assert raw == SHARED_COPY.read_bytes()


def test_load_ifeval_full():
    assert len(ITEMS) == 541 and len({i.key for i in ITEMS}) == 541
    first = json.loads((DATA / "ifeval_input_data.jsonl").read_text().splitlines()[0])
    assert ITEMS[0] == IFEvalItem(first["key"], first["prompt"], first["instruction_id_list"], first["kwargs"])


def test_load_ifeval_subset_is_deterministic_and_covers_every_instruction():
    sub = load_ifeval(40, seed=3)
    assert len(sub) == 40 and len({i.key for i in sub}) == 40
    assert [i.key for i in sub] == [i.key for i in load_ifeval(40, seed=3)]
    assert [i.key for i in sub] != [i.key for i in load_ifeval(40, seed=4)]
    assert {iid for i in sub for iid in i.instruction_id_list} == set(FILE_IDS)
    order = {i.key: n for n, i in enumerate(ITEMS)}
    assert [order[i.key] for i in sub] == sorted(order[i.key] for i in sub)  # file order kept
    assert len(load_ifeval(5)) == 5
    with pytest.raises(ValueError, match="subset=0"):
        load_ifeval(0)


def test_evaluate_ifeval_known_accuracy():
    items = [
        IFEvalItem(1, "p1", ["punctuation:no_comma", "length_constraints:number_words"],
                   [{}, {"relation": "at least", "num_words": 3}]),
        IFEvalItem(2, "p2", ["punctuation:no_comma", "startend:quotation"], [{}, {}]),
        IFEvalItem(3, "p3", ["detectable_format:constrained_response"], [{}]),
        IFEvalItem(4, "p4", ["punctuation:no_comma"], [{}]),
    ]
    responses = ["one two three four", '"a, b"', "maybe", "   "]
    result = evaluate_ifeval(items, responses)
    assert result == {
        "prompt_level_strict": 1 / 4,
        "instruction_level_strict": 3 / 6,
        "n_prompts": 4,
        "n_instructions": 6,
        "per_instruction": {
            "detectable_format:constrained_response": 0.0,
            "length_constraints:number_words": 1.0,
            "punctuation:no_comma": 1 / 3,
            "startend:quotation": 1.0,
        },
    }


def test_evaluate_ifeval_on_real_items():
    items = [i for i in ITEMS if i.instruction_id_list == ["punctuation:no_comma"]]
    assert len(items) >= 4
    responses = ["Fine, thanks." if n % 4 == 0 else "Fine thanks." for n in range(len(items))]
    n_bad = sum(1 for r in responses if "," in r)
    result = evaluate_ifeval(items, responses)
    assert result["prompt_level_strict"] == pytest.approx(1 - n_bad / len(items))
    assert result["per_instruction"] == {"punctuation:no_comma": pytest.approx(1 - n_bad / len(items))}
    with pytest.raises(ValueError, match="2 items but 1 responses"):
        evaluate_ifeval(items[:2], ["x"])


def test_doctests():
    assert doctest.testmod(ifeval_checks).failed == 0
