"""minhash and shingles: the vectorized word/shingle hashing matches the string definitions, banding finds
exactly the pairs that share a band, the pre-check bound is the binomial one, and chunking never changes a result."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from sftpipe.curate import minhash
from sftpipe.curate import shingles as shingles_module
from sftpipe.curate.base import norm_words
from sftpipe.curate.minhash import NearIndex, band_pairs, min_matches
from sftpipe.curate.shingles import ngram_hashes, shingles, text_chunks, word_hashes

ALPHABET = "abcAB Z_09 .,!?'-\t\n\x1c\x0b\x00éÉßöΣσ«»¿–\u00a0\u2003\u212a日本"
texts_st = st.lists(st.text(alphabet=ALPHABET, max_size=40), min_size=1, max_size=6)


@settings(max_examples=300, deadline=None)
@given(texts_st)
def test_word_hashes_match_norm_words(texts):
    hashes, counts = word_hashes(texts)
    words = [norm_words(t) for t in texts]
    assert counts.tolist() == [len(w) for w in words]
    flat = list(itertools.chain.from_iterable(words))
    by_hash: dict[int, str] = {}
    for h, w in zip(hashes.tolist(), flat):
        assert by_hash.setdefault(h, w) == w  # one hash, one word
    assert len(set(hashes.tolist())) == len(set(flat))  # and one word, one hash


@settings(max_examples=150, deadline=None)
@given(texts_st, st.integers(1, 4), st.sampled_from(["word", "char"]))
def test_shingle_hash_sets_mirror_string_shingles(texts, n, unit):
    flat, offsets = ngram_hashes(texts, n, unit)
    sets = [set(flat[offsets[i]:offsets[i + 1]].tolist()) for i in range(len(texts))]
    strings = [set(shingles(t, n, unit)) for t in texts]
    assert [len(s) for s in sets] == [len(s) for s in strings]
    for i, j in itertools.combinations(range(len(texts)), 2):
        assert len(sets[i] & sets[j]) == len(strings[i] & strings[j])


def test_chunking_and_halving_change_nothing(monkeypatch):
    rng = random.Random(3)
    words = ["order", "refund", "late", "box", "Ünïcode", "it's"]
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(0, 30))) for _ in range(300)]
    texts += texts[:40]  # exact duplicates, to have something to drop
    whole = ngram_hashes(texts, 3)
    expected = NearIndex(0.7, 64, 3).add(texts, list(range(len(texts))))
    links = NearIndex(0.7, 64, 3).link(texts)
    monkeypatch.setattr(shingles_module, "TEXT_CHUNK", 50)
    monkeypatch.setattr(minhash, "PAIR_CHUNK", 7)
    monkeypatch.setattr(minhash, "MAX_PAIRS", 20)  # batches with more band matches are halved, down to one text
    refused = []
    real_band_pairs = minhash.band_pairs
    monkeypatch.setattr(minhash, "band_pairs", lambda *a: refused.append(1) if real_band_pairs(*a) is None else
                        real_band_pairs(*a))
    assert len(text_chunks(texts)) > 100
    chunked = ngram_hashes(texts, 3)
    assert np.array_equal(whole[0], chunked[0]) and np.array_equal(whole[1], chunked[1])
    assert NearIndex(0.7, 64, 3).add(texts, list(range(len(texts)))) == expected
    assert NearIndex(0.7, 64, 3).link(texts) == links
    assert sum(hit is not None for hit in expected) >= 40 and len(links) >= 40 and len(refused) > 10


def test_band_pairs_equal_brute_force():
    rng = np.random.default_rng(0)
    keys = rng.integers(0, 6, size=(60, 4)).astype(np.uint64)
    for first_new in (0, 25, 59):
        want = sorted((a, b) for b in range(first_new, 60) for a in range(b) if (keys[a] == keys[b]).any())
        assert band_pairs(keys, first_new).tolist() == [list(p) for p in want]


def test_min_matches_is_the_binomial_bound():
    for t, n, miss in ((0.8, 128, 1e-6), (0.5, 128, 1e-6), (0.9, 64, 1e-3)):
        k = min_matches(t, n, miss)

        def below(m: int) -> float:  # P(Binomial(n, t) < m)
            return sum(math.comb(n, i) * t ** i * (1 - t) ** (n - i) for i in range(m))
        assert below(k) <= miss < below(k + 1)


def test_add_names_a_kept_duplicate_and_link_finds_every_pair():
    base = "where is my order it was supposed to arrive on monday and the tracking page has not moved since"
    texts = [base, base + " thanks", "completely different words about a refund for a broken lamp today", base]
    hits = NearIndex(0.8, 128, 3).add(texts, ["a", "b", "c", "d"])
    assert hits[0] is None and hits[2] is None
    assert hits[1][0] == "a" and 0.8 <= hits[1][1] < 1 and hits[3] == ("a", 1.0)
    assert NearIndex(0.8, 128, 3).link(texts) == [(0, 1), (0, 3), (1, 3)]


def test_groups_are_the_components_of_link():
    rng = random.Random(5)
    texts = [" ".join(rng.choice(["order", "late", "box", "refund", "lamp", "card"]) for _ in range(rng.randint(3, 12)))
             for _ in range(400)]
    parent = list(range(len(texts)))

    def find(i: int) -> int:
        return i if parent[i] == i else find(parent[i])
    for a, b in NearIndex(0.5, 64, 2).link(texts):
        ra, rb = find(a), find(b)
        parent[max(ra, rb)] = min(ra, rb)
    expected = [find(i) for i in range(len(texts))]
    assert len(set(expected)) < len(texts) - 50  # there are clusters to join
    assert NearIndex(0.5, 64, 2).groups(texts) == expected
