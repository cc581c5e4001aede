"""pii stage: recognizers, precision/recall on the labelled synthetic set and on the hand-labelled set in
tests/assets/pii/labelled.jsonl (see its README), and no detected value left behind."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

from sftpipe.conversation import Conversation, Message
from sftpipe.curate import pii, pii_names
from sftpipe.config.curate import PII_TYPES, PiiConfig
from sftpipe.curate.pii import Pii, Span, find_pii, luhn_ok, redact_text
from sftpipe.curate.pii_synth import make_set, make_value, score, score_by_type

LABELLED = Path(__file__).parents[1] / "assets" / "pii" / "labelled.jsonl"


def types_of(text: str) -> list[tuple[str, str]]:
    return [(s.type, s.value) for s in find_pii(text)]


def test_card_needs_the_luhn_check():
    assert luhn_ok("4539148803436467") and not luhn_ok("4539148803436468")
    assert types_of("card 4539 1488 0343 6467 please") == [("CARD", "4539 1488 0343 6467")]
    assert types_of("card 4539 1488 0343 6468 please") == []


@pytest.mark.parametrize("text", [
    "Order HB-482913 shipped on 2024-05-12 at 10:30.", "My order number is 9134204001, can you check it?",
    "It should arrive in May, or June at the latest.", "Version 2.3.1 crashes.", "Total 123.45 USD for 3 items.",
    "Will you refund it? Grace period is 30 days.", "The code 9141881829638430 did not work.",
])
def test_look_alikes_are_not_pii(text):
    assert types_of(text) == []


@pytest.mark.parametrize("text,kind,value", [
    ("Mail me at jo.smith+x@mail.co.uk today", "EMAIL", "jo.smith+x@mail.co.uk"),
    ("Call (415) 555-0132 now", "PHONE", "(415) 555-0132"),
    ("Call me on +44 20 7946 0958", "PHONE", "+44 20 7946 0958"),
    ("login from 2001:db8:85a3::8a2e:370:7334 failed", "IP", "2001:db8:85a3::8a2e:370:7334"),
    ("SSN 123-45-6789", "SSN", "123-45-6789"),
    ("Ship to 12 Oak Lane, Apt 4, Denver, CO 80202 please", "ADDRESS", "12 Oak Lane, Apt 4, Denver, CO 80202"),
    ("Thanks,\nKwame Mensah", "PERSON", "Kwame Mensah"),
    ("Please ask Jennifer to call me.", "PERSON", "Jennifer"),
])
def test_each_recognizer(text, kind, value):
    assert (kind, value) in types_of(text)


def test_precision_and_recall_on_the_labelled_set():
    result = score(make_set(800, seed=11))
    assert result["values"] > 500
    assert result["recall"] >= 0.98, result
    assert result["precision"] >= 0.95, result


def test_recall_drops_when_a_recognizer_is_off():
    # the measure itself can fail: without the PHONE recognizer recall falls below the bar
    result = score(make_set(800, seed=11), types=("EMAIL", "IP", "CARD", "SSN", "ADDRESS", "PERSON"))
    assert result["recall"] < 0.98


def conv(*texts: str, meta=None) -> Conversation:
    roles = ["user", "assistant"] * len(texts)
    return Conversation([Message(r, t) for r, t in zip(roles, texts)], meta or {})


def test_placeholders_never_leave_a_detected_value_behind():
    rng = random.Random(3)
    stage = Pii(PiiConfig())
    for _ in range(200):
        values = [(k, make_value(rng, k)) for k in rng.sample(["EMAIL", "PHONE", "CARD", "IP", "ADDRESS"], 2)]
        name = make_value(rng, "PERSON")
        user = f"Hi, my name is {name}. " + " ".join(f"Use {v} please." for _, v in values)
        reply = f"Thanks {name.split()[0]}! I noted {values[0][1]}."  # echoes values in another role
        out, stats = stage.process(conv(user, reply))
        text = "\n".join(m.content for m in out.messages)
        detected = {s.value for m in conv(user, reply).messages for s in find_pii(m.content)}
        assert detected, user
        for v in detected | {name.split()[0]}:
            assert v not in text, (v, text)
        for kind, _ in values:
            assert f"[{kind}]" in text
        assert stats["records_redacted"] == 1


def test_stage_counts_by_type_and_redacts_meta():
    out, stats = Pii(PiiConfig()).process(conv("mail a@b.com or c@d.org", "ok", meta={"facts": {"email": "e@f.net"}}))
    assert stats["found_EMAIL"] == 2 and stats["meta_EMAIL"] == 1
    assert out.meta == {"facts": {"email": "[EMAIL]"}} and out.messages[0].content == "mail [EMAIL] or [EMAIL]"


def test_roles_and_types_are_respected():
    cfg = PiiConfig(roles=["assistant"], types=["EMAIL"])
    out, _ = Pii(cfg).process(conv("me: a@b.com, 415-555-0132", "write to x@y.com, 415-555-0132"))
    assert out.messages[0].content == "me: a@b.com, 415-555-0132"
    assert out.messages[1].content == "write to [EMAIL], 415-555-0132"


def test_drop_action_gives_reason_pii_found_with_types_and_a_redacted_record():
    drop, _ = Pii(PiiConfig(action="drop")).process(conv("card 4111 1111 1111 1111", "noted"))
    assert drop.reason == "pii_found" and drop.details == {"types": {"CARD": 1}}
    assert "4111" not in drop.conversation.messages[0].content


def test_redact_text_returns_counts():
    text, counts = redact_text("a@b.com and 10.0.0.1")
    assert text == "[EMAIL] and [IP]" and counts == {"EMAIL": 1, "IP": 1}


def labelled() -> list[dict]:
    return [json.loads(line) for line in LABELLED.read_text(encoding="utf-8").splitlines()]


def test_labelled_set_is_well_formed_and_varied():
    rows = labelled()
    spans = [g for r in rows for g in r["spans"]]
    for r in rows:
        for g in r["spans"]:
            assert r["text"][g["start"]:g["end"]] == g["value"] and g["type"] in PII_TYPES, (r["id"], g)
    assert len(spans) >= 300 and sum(not r["spans"] for r in rows) >= 150  # labelled spans; hard negatives
    assert sum(g["type"] == "PERSON" for g in spans) >= 200 and sum(g["type"] == "ADDRESS" for g in spans) >= 90
    assert len({r["category"] for r in rows if r["category"].startswith("addr-")}) >= 12  # countries / regions
    # Cyrillic, Greek, CJK, Hangul, Arabic, Hebrew, Devanagari, Thai
    scripts = ["\u0400-\u04ff", "\u0370-\u03ff", "\u4e00-\u9fff", "\uac00-\ud7af", "\u0600-\u06ff", "\u05d0-\u05ea",
               "\u0900-\u097f", "\u0e00-\u0e7f"]
    names = " ".join(g["value"] for g in spans if g["type"] == "PERSON")
    assert all(re.search(f"[{r}]", names) for r in scripts)
    assert {r["split"] for r in rows} == {"dev", "heldout", "blind"}


def test_per_type_precision_and_recall_on_the_labelled_set():
    result = score_by_type(labelled())
    assert set(result) == set(PII_TYPES)
    for kind, row in result.items():
        assert row["recall"] >= 0.98 and row["precision"] >= 0.95, (kind, row)


def test_the_labelled_measure_can_fail():
    # tagging every capitalised word as a name finds most names but is far below the precision bar
    def every_capital(text):
        return [Span(m.start(), m.end(), "PERSON", m.group()) for m in re.finditer(r"\b[A-Z]\w+", text)]
    person = score_by_type(labelled(), every_capital)["PERSON"]
    assert person["precision"] < 0.6
    assert score_by_type(labelled(), lambda text: [])["ADDRESS"]["recall"] == 0


@pytest.fixture
def census_names_only(monkeypatch):
    """The name lists cut down to the US census ones (no hand-compiled world lists)."""
    full = pii_names._lexicon()
    lists = {k: frozenset(w for line in (Path(pii.__file__).parent / "data" / f"{k}_names.txt").read_text(
        encoding="utf-8").splitlines() if not line.startswith("#") for w in line.split()) for k in ("first", "last")}
    pii_names._token.cache_clear()
    monkeypatch.setattr(pii_names, "_lexicon", lambda: {**full, **lists})
    yield
    pii_names._token.cache_clear()


def test_cues_not_the_name_lists_carry_recall(census_names_only):
    # the world name lists and the set were written by the same hand; without them names must still be found
    person = score_by_type(labelled())["PERSON"]
    assert person["recall"] >= 0.95 and person["precision"] >= 0.95, person


@pytest.mark.parametrize("text,value", [
    ("Hi, I'm Kenji Okafor and my order never came.", "Kenji Okafor"),
    ("Hi, I'm Priya Nilsson.", "Priya Nilsson"), ("Hello, I'm Dmitri O'Brien, about my lamp.", "Dmitri O'Brien"),
    ("Hi, I'm Chloé Dubois — the charger is missing.", "Chloé Dubois"),
    ("Hi, I'm Xóchitl Tlapaltototl, hello.", "Xóchitl Tlapaltototl"),  # in no name list
    ("Best regards,\nΜαρία Κωνσταντίνου", "Μαρία Κωνσταντίνου"), ("Hi, I'm 林美玲.", "林美玲"),
    ("Carlos here (account holder), the box was empty.", "Carlos"),
])
def test_names_from_many_languages_and_scripts(text, value):
    assert ("PERSON", value) in types_of(text)


@pytest.mark.parametrize("text", [
    "Carlos here from Harbor Support, how can I help?", "Thanks,\nCarlos\nHarbor Support",
    "I'm Sorry, this is Urgent.", "My Stanley cup arrived dented.", "Is there a store in Austin?",
    "We're near Victoria Station.", "Hi Team, thanks Again!", "Chase sent me an alert. Grace period is over.",
])
def test_name_look_alikes_are_not_names(text):
    assert [t for t, _ in types_of(text) if t == "PERSON"] == []


@pytest.mark.parametrize("text,value", [
    ("Please ship to 12 Rue de Rivoli, 75001 Paris.", "12 Rue de Rivoli, 75001 Paris"),
    ("Send it to Hauptstraße 5, 10115 Berlin.", "Hauptstraße 5, 10115 Berlin"),
    ("Ship to Via Roma 25, 00184 Roma please", "Via Roma 25, 00184 Roma"),
    ("I live at Flat 3, 47 Kingsway, Manchester M19 2LL.", "Flat 3, 47 Kingsway, Manchester M19 2LL"),
    ("Ship to 24 Sussex Drive, Ottawa, ON K1M 1M4.", "24 Sussex Drive, Ottawa, ON K1M 1M4"),
    ("Post it to 7/19 Beach Road, Bondi NSW 2026.", "7/19 Beach Road, Bondi NSW 2026"),
])
def test_street_addresses_of_many_countries(text, value):
    assert ("ADDRESS", value) in types_of(text)


@pytest.mark.parametrize("text", ["Size 10 Court shoes, please.", "I got 2 Place mats instead of 4.",
                                  "The box had 24 Rue Cler postcards.", "We're on Route 66 near exit 12."])
def test_address_look_alikes_are_not_addresses(text):
    assert [t for t, _ in types_of(text) if t == "ADDRESS"] == []


def test_the_phone_precheck_never_hides_a_phone_the_matcher_finds():
    """Texts skip the matcher when none of its candidates has 7 digits; on texts full of phones, ids, amounts,
    dates and extensions the result equals the matcher's own."""
    rng = random.Random(5)
    texts = [text for text, _ in make_set(600, seed=3)]
    texts += [json.loads(line)["text"] for line in
              Path("tests/assets/pii/labelled.jsonl").read_text(encoding="utf-8").splitlines()]
    texts += ["call 555-0132 ext 4567", "ref HB-842571, total 258.94 on 2024-05-01", "+683 4002", "x 12 34 5",
              "dial 020 7946 0958 or ０２０ ７９４６ ０９５８", "ids 123456 and 7654321", "(415)555-0132x12"]
    texts += [" ".join(str(rng.randint(0, 10 ** rng.randint(1, 8))) + rng.choice(["", "-", " ", ".", "/"])
                       for _ in range(rng.randint(1, 6))) for _ in range(500)]
    hidden = [t for t in texts if pii._phone_spans(t, "US") != pii._matched_phones(t, "US")]
    assert hidden == []
    assert sum(bool(pii._matched_phones(t, "US")) for t in texts) > 100  # the sample does hold phones


def test_short_texts_share_cached_spans_and_stay_unchanged():
    text = "Kwame Mensah, +44 20 7946 0958"
    first = find_pii(text)
    assert [s.type for s in first] == ["PERSON", "PHONE"]
    first.append(Span(0, 1, "X", "K"))  # a caller's edit must not reach the cache
    assert find_pii(text) == pii._find(text, PII_TYPES, "US") == first[:2]


@pytest.mark.parametrize("text, address", [
    ("Please ship it to 12 Calle Mayor, 28013 Madrid.", "12 Calle Mayor, 28013 Madrid"),
    ("Send it to 5 Via Roma, 00184 Roma.", "5 Via Roma, 00184 Roma"),
    ("My address is 221 Avenida Paulista, São Paulo.", "221 Avenida Paulista, São Paulo"),
    ("Deliver to 8 Rua Augusta, Lisboa.", "8 Rua Augusta, Lisboa"),
    ("ship to 17 Piazza Navona, Roma", "17 Piazza Navona, Roma"),
    ("my address is 7 Carrer de Balmes, Barcelona", "7 Carrer de Balmes, Barcelona"),
])
def test_the_house_number_before_a_romance_street_type_is_part_of_the_address(text, address):
    """Number, then Calle/Via/Avenida/Rua/Piazza/Carrer and the name: the number and the city no longer leak."""
    assert [(s.type, s.value) for s in find_pii(text) if s.type == "ADDRESS"] == [("ADDRESS", address)]


@pytest.mark.parametrize("text", ["I sent 5 via email yesterday", "We have 3 Plaza tickets left.",
                                  "Order 12 via DHL please"])
def test_a_number_before_via_or_plaza_in_prose_is_no_address(text):
    assert not [s for s in find_pii(text) if s.type == "ADDRESS"]
