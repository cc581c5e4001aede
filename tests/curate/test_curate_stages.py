"""normalize, filters, decontaminate, quality, mix and split, one stage at a time; plus config validation."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from sftpipe.conversation import Conversation, Message
from sftpipe.config.curate import (CurateConfig, DecontamConfig, FiltersConfig, MixConfig, NormalizeConfig,
                                   QualityConfig, SplitConfig)
from sftpipe.curate.decontam import Decontaminate, load_eval_set
from sftpipe.curate.filters import Filters, boilerplate_phrases, truncation
from sftpipe.curate.mix import Mix
from sftpipe.curate.normalize import Normalize, normalize_text
from sftpipe.curate.quality import Quality, heuristic_score
from sftpipe.curate.split import Split, near_groups

GOOD = "Your order HB-100001 ships today and arrives within 2 business days. You will get a tracking email."


def conv(user: str, reply: str = GOOD, **meta) -> Conversation:
    return Conversation([Message("user", user), Message("assistant", reply)], meta)


# normalize -------------------------------------------------------------------------------------------------

def test_normalize_fixes_mojibake_nfkc_and_whitespace_but_not_code():
    cfg = NormalizeConfig()
    assert normalize_text("Whereâ€™s my ï¬\x81le?", cfg) == "Where's my file?"
    assert normalize_text("a   b\n\n\n\nc  ", cfg) == "a b\n\nc"
    code = "```py\nx  =  1\n```"
    assert normalize_text(code, cfg) == code
    assert normalize_text("ﬁ", NormalizeConfig(unicode="none", fix_mojibake=False)) == "ﬁ"


def test_normalize_drops_records_that_become_invalid():
    kept, dropped = Normalize(NormalizeConfig()).apply([conv("Hi there", "\u200b"), conv("Hi", "Hello  there")])
    assert dropped[0].reason == "invalid" and dropped[0].details["error"] == "empty_content"
    assert kept[0].messages[1].content == "Hello there"


# filters ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("reply,reason", [
    ("...", "empty_reply"),
    ("I checked it. The refund will be sent to your card within", "truncated_reply"),
    ('Offer: {"order_id": "HB-1", "amount": 20', "truncated_reply"),
    ("Honestly, you are an idiot. It ships today.", "toxic"),
    ("Thank you for contacting Harbor Support. We truly value you.\n\nWe understand how frustrating this is.\n\n"
     "It ships today.", "boilerplate_opener"),
    ("Su pedido HB-100001 llegará dentro de dos días hábiles. Recibirá un correo con el seguimiento.",
     "wrong_language"),
])
def test_each_filter_reason(reply, reason):
    user = "Where is my order HB-100001? I chose express shipping." if reason != "wrong_language" else \
        "¿Dónde está mi pedido HB-100001? Elegí el envío exprés."
    kept, dropped = Filters(FiltersConfig()).apply([conv(user, reply), conv(user.replace("1?", "2?"), GOOD)])
    assert [d.reason for d in dropped] == [reason]
    assert len(kept) == 1 or reason == "wrong_language"


def test_truncation_kinds_and_complete_answers():
    assert truncation("Done.\n```py\nx = 1") == "unbalanced_code_fence"
    assert truncation('{"a": [1, 2}') == "unbalanced_json"
    assert truncation("It ships today. We will email you when") == "mid_sentence"
    for ok in ("2, 4, 6, 8", "Thanks,\nMaria", "- item one\n- item two", "Sure!", 'Here: {"a": 1}'):
        assert truncation(ok) is None, ok


def test_token_bounds_with_the_real_tokenizer(tok):
    cfg = FiltersConfig(min_tokens=5, max_tokens=40, languages=[])
    short, long, fine = conv("Hi", "Yes."), conv("Where is it? " * 20), conv("Where is my order?")
    kept, dropped = Filters(cfg, tokenizer=tok).apply([short, long, fine])
    assert [d.reason for d in dropped] == ["too_short", "too_long"]
    assert dropped[0].details["counted_by"] == "tokenizer" and dropped[1].details["tokens"] > 40
    assert Filters(cfg).check_length(long)[2]["counted_by"] == "chars/4"


def test_token_counts_equal_the_tokenizers_own(tok):
    from sftpipe.curate.filters import count_tokens

    texts = ["Where is my order HB-100001?", "", "  ", "Ünïcode — 日本語 ✓", "<|im_end|> not special here\n\n"]
    assert count_tokens(texts, tok) == sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts) > 10
    assert count_tokens([], tok) == 0


def test_toxicity_in_user_turns_only_when_configured():
    rude = conv("You people are useless, where is my parcel?")
    assert Filters(FiltersConfig()).apply([rude])[1] == []
    dropped = Filters(FiltersConfig(toxicity_roles=["user", "assistant"])).apply([rude])[1]
    assert dropped[0].reason == "toxic" and dropped[0].details["role"] == "user"


def test_boilerplate_counts_only_the_opening():
    assert boilerplate_phrases("It ships today.\n\nThank you for contacting us. We value your trust.") == []
    assert len(boilerplate_phrases("Thank you for reaching out! I hope this helps.\n\nIt ships.")) == 2


def test_a_crashing_check_drops_with_reason_error_unless_strict(monkeypatch):
    def boom(self, c):
        raise RuntimeError("bad")
    monkeypatch.setattr(Filters, "check_toxicity", boom)
    kept, dropped = Filters(FiltersConfig()).apply([conv("Where is my order HB-100001 now?")])
    assert dropped[0].reason == "error" and "RuntimeError: bad" in dropped[0].details["error"]
    with pytest.raises(RuntimeError):
        Filters(FiltersConfig(), strict=True).apply([conv("Where is my order HB-100001 now?")])


# decontaminate ---------------------------------------------------------------------------------------------

def test_decontaminate_against_the_shipped_ifeval_prompts():
    items = load_eval_set("builtin:ifeval")
    assert len(items) == 541
    key, prompt = items[3]
    words = prompt.split()
    stage = Decontaminate(DecontamConfig())
    leaked = conv("Please help: " + " ".join(words[:14]) + " thanks")
    kept, dropped = stage.apply([leaked, conv("Where is my order HB-100001? I chose express shipping.")])
    assert len(kept) == 1 and dropped[0].reason == "contaminated"
    assert dropped[0].details["eval_set"] == "ifeval" and dropped[0].details["item"] == key
    assert stage.stats["overlap_ifeval"] == 1


def test_short_prompts_match_on_8_grams_and_long_ones_need_13():
    items = {"mini": [(1, "Write a haiku about the sea in spring please"),
                      (2, " ".join(f"w{i}" for i in range(40)))]}
    stage = Decontaminate(DecontamConfig(eval_sets={}), eval_items=items)
    assert stage.match("Could you write a haiku about the sea in spring") is not None
    assert stage.match(" ".join(f"w{i}" for i in range(12))) is None
    hit = stage.match("x " + " ".join(f"w{i}" for i in range(5, 18)))
    assert hit == {"eval_set": "mini", "item": 2, "ngram": 13, "overlap": " ".join(f"w{i}" for i in range(5, 18))}


def test_missing_eval_set_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="eval set"):
        Decontaminate(DecontamConfig(eval_sets={"x": str(tmp_path / "nope.jsonl")}))


# quality ---------------------------------------------------------------------------------------------------

def test_quality_scores_and_drops_low_and_below_top_share():
    good, rep, shout = conv("Where?"), conv("Where?", "ok ok ok ok ok ok ok ok ok ok ok."), conv("Where?", GOOD.upper())
    assert heuristic_score(good) > 0.9 > heuristic_score(shout) and heuristic_score(rep) < 0.1
    kept, dropped = Quality(QualityConfig(min_score=0.3)).apply([good, rep])
    assert kept == [good] and dropped[0].reason == "low_quality" and "parts" in dropped[0].details
    convs = [conv(f"q{i}", GOOD + " More detail." * (i % 3)) for i in range(8)] + [shout]
    kept, dropped = Quality(QualityConfig(min_score=0.0, keep_top=0.5)).apply(convs)
    assert len(kept) == 5 and {d.reason for d in dropped} == {"below_top_share"}
    assert shout not in kept


class _Judge(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        text = body["messages"][0]["content"]
        answer = "2" if "ok ok" in text else "9"
        out = json.dumps({"choices": [{"message": {"role": "assistant", "content": answer}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


def test_judge_endpoint_on_a_sample():
    server = HTTPServer(("127.0.0.1", 0), _Judge)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        cfg = QualityConfig(min_score=0.5, judge={"enabled": True, "url": f"http://127.0.0.1:{server.server_port}/v1",
                                                  "sample": 10, "weight": 1.0, "timeout_s": 5})
        meh = conv("Where?", "ok ok sure, it ships today. Anything else I can do for you?")
        kept, dropped = Quality(cfg).apply([conv("Where?"), meh])
    finally:
        server.shutdown()
    assert [d.conversation for d in dropped] == [meh] and dropped[0].details["judge"] == pytest.approx(1 / 9, 1e-3)



def test_judge_endpoint_retries_a_transient_failure():
    seen = []

    class Flaky(_Judge):
        def do_POST(self):  # noqa: N802
            seen.append(self.path)
            if len(seen) == 1:  # the first request meets an overloaded server
                self.rfile.read(int(self.headers["Content-Length"]))
                self.send_response(503)
                self.end_headers()
                return
            super().do_POST()

    server = HTTPServer(("127.0.0.1", 0), Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        cfg = QualityConfig(min_score=0.5, judge={"enabled": True, "url": f"http://127.0.0.1:{server.server_port}/v1",
                                                  "sample": 1, "weight": 1.0, "timeout_s": 5})
        quality = Quality(cfg)
        kept, dropped = quality.apply([conv("Where?")])
    finally:
        server.shutdown()
    assert seen == ["/v1/chat/completions"] * 2
    assert (quality.stats["judged"], quality.stats["judge_failed"]) == (1, 0) and len(kept) == 1 and not dropped

# mix and split ---------------------------------------------------------------------------------------------

def test_mix_ratio_and_not_sampled():
    main = [conv(f"m{i}", category="refund") for i in range(40)]
    general = [conv(f"g{i}") for i in range(30)]
    mix = Mix(MixConfig(enabled=True, source="x", ratio=0.2, seed=1), general, field="category")
    kept, dropped = mix.apply(main)
    added = kept[40:]
    assert len(added) == 10 and len(dropped) == 20 and all(d.reason == "not_sampled" for d in dropped)
    assert all(c.meta == {"mix": "general", "category": "general"} for c in added)
    assert mix.n_in(main) == len(kept) + len(dropped)
    again = Mix(MixConfig(enabled=True, source="x", ratio=0.2, seed=1), general, field="category").apply(main)[0]
    assert [c.messages for c in again] == [c.messages for c in kept]


def corpus_for_split():
    cats = ["refund"] * 60 + ["order_status"] * 30 + ["lockout"] * 10
    return [conv(f"ticket {i} about {c} with some unique words w{i}a w{i}b w{i}c w{i}d", category=c, id=i)
            for i, c in enumerate(cats)]


def test_split_is_stratified_and_seeded():
    convs = corpus_for_split()
    out = Split(SplitConfig(eval_ratio=0.1, seed=0)).assign(convs)
    assert len(out["train"]) + len(out["eval"]) == 100
    for cat, n in (("refund", 6), ("order_status", 3), ("lockout", 1)):
        assert sum(c.meta["category"] == cat for c in out["eval"]) == n
    same = Split(SplitConfig(eval_ratio=0.1, seed=0)).assign(convs)
    other = Split(SplitConfig(eval_ratio=0.1, seed=1)).assign(convs)
    ids = lambda cs: [c.meta["id"] for c in cs]  # noqa: E731
    assert ids(same["eval"]) == ids(out["eval"]) and ids(other["eval"]) != ids(out["eval"])
    three = Split(SplitConfig(splits={"train": 0.8, "eval": 0.1, "test": 0.1})).assign(convs)
    assert {k: len(v) for k, v in three.items()} == {"train": 80, "eval": 10, "test": 10}


def test_near_duplicates_never_straddle_the_split():
    convs = corpus_for_split()
    for k in range(10):  # 10 families of 3 near-duplicates (similar within a family, unrelated across families)
        base = "my parcel never arrived and " + " ".join(f"k{k}w{i}" for i in range(12))
        for j, extra in enumerate(("", " today", " asap thanks")):
            convs.append(conv(base + extra, category="refund", id=f"f{k}-{j}"))
    out = Split(SplitConfig(eval_ratio=0.3, seed=3)).assign(convs)
    where = {c.meta["id"]: name for name, cs in out.items() for c in cs}
    for k in range(10):
        assert len({where[f"f{k}-{j}"] for j in range(3)}) == 1
    assert any(where[f"f{k}-0"] == "eval" for k in range(10)) and any(where[f"f{k}-0"] == "train" for k in range(10))


def test_conversations_alike_as_a_whole_never_straddle_the_split_even_when_prompts_differ():
    """Short, different prompts with one long shared reply: the prompts alone would not tie them (doctor compares
    whole conversations and would find the pair across train and eval)."""
    convs = corpus_for_split()
    for k in range(10):
        reply = "We are sorry about the delay. " + " ".join(f"k{k}r{i}" for i in range(40))
        for j in range(3):
            convs.append(conv(f"family {k} member {j} asks zz{k}{j}", reply, category="refund", id=f"f{k}-{j}"))
    where = {}
    for threshold in (0.7, 0.99):  # the default ties them; nearly off, some family straddles the split
        out = Split(SplitConfig(eval_ratio=0.3, seed=3, conversation_threshold=threshold)).assign(convs)
        where[threshold] = {c.meta["id"]: name for name, cs in out.items() for c in cs}
    spans = {t: [len({w[f"f{k}-{j}"] for j in range(3)}) for k in range(10)] for t, w in where.items()}
    assert spans[0.7] == [1] * 10 and max(spans[0.99]) == 2


def test_near_groups_join_identical_texts_without_listing_their_pairs(monkeypatch):
    from sftpipe.curate.minhash import NearIndex

    same = ["Where is my ORDER?", "where is my order", "Where is my order!!"] * 400  # 1,200 identical prompts
    texts = same + ["", "  ", "where is my order please", "refund for a broken lamp"]
    indexed = []
    groups = NearIndex.groups_sketch
    monkeypatch.setattr(NearIndex, "groups_sketch",
                        lambda self, sk, only: indexed.extend(np.flatnonzero(only)) or groups(self, sk, only))
    groups = near_groups(texts, 0.5, shingle=2)
    assert len(indexed) == 5  # one of the identical prompts (their ~700k pairs are never listed), and the rest
    assert set(groups[:1200]) == {0} and groups[1202] == 0  # the near one joins too
    assert groups[1200] == 1200 and groups[1201] == 1201 and groups[1203] == 1203  # empty texts stay alone


# config ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("raw,needle", [
    ({"dedup": {"near": {"threshold": 1.5}}}, "threshold"),
    ({"filters": {"min_tokens": 10, "max_tokens": 5}}, "min_tokens"),
    ({"mix": {"enabled": True}}, "no source"),
    ({"split": {"splits": {"train": 0.5, "eval": 0.2}}}, "sum to 1"),
    ({"pii": {"types": ["EMAIL", "DNA"]}}, "DNA"),
    ({"quality": {"bogus": 1}}, "bogus"),
])
def test_config_errors_name_the_problem(raw, needle):
    with pytest.raises(ValidationError, match=needle):
        CurateConfig.model_validate(raw)


def test_default_config_round_trips():
    cfg = CurateConfig()
    assert CurateConfig.model_validate(json.loads(cfg.model_dump_json())) == cfg
    assert Path(cfg.decontaminate.eval_sets["ifeval"]).name == "builtin:ifeval"


def test_plain_ascii_skips_ftfy_with_the_same_result():
    """ASCII without control characters is returned by ftfy as is, so normalize skips it; random ASCII with
    controls, \\r and escapes gives what ftfy gives."""
    import random

    import ftfy

    from sftpipe.curate.normalize import clean_whitespace

    rng = random.Random(0)
    alphabet = [chr(i) for i in range(128)] + ["\r\n", "\x1b[31m", "&amp;", "  ", "\n\n\n"]
    cfg = NormalizeConfig()
    for _ in range(2000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        want = clean_whitespace(ftfy.fix_text(text, normalization="NFKC", unescape_html=False))
        assert normalize_text(text, cfg) == want, repr(text)
