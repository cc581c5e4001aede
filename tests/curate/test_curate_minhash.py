"""minhash and shingles: the vectorized word/shingle hashing matches the string definitions, equal band
keys share a bucket, similarities are exact, the pre-check bound is the binomial one, a full bucket offers a
bounded number of texts, and chunking never changes a result."""

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
from sftpipe.curate.minhash import NearIndex, bucket_ids, min_matches
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


def brute_links(texts: list[str], threshold: float, n: int) -> list[tuple[int, int]]:
    """Every (earlier, later) pair whose shingle sets reach `threshold` Jaccard: the reference for the index."""
    sets = [set(shingles(t, n)) for t in texts]
    return [(a, b) for a, b in itertools.combinations(range(len(texts)), 2)
            if sets[a] and sets[b] and len(sets[a] & sets[b]) / len(sets[a] | sets[b]) >= threshold]


def test_chunking_changes_nothing(monkeypatch):
    rng = random.Random(3)
    words = ["order", "refund", "late", "box", "Ünïcode", "it's"]
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(0, 30))) for _ in range(300)]
    texts += texts[:40]  # exact duplicates, to have something to drop
    whole = ngram_hashes(texts, 3)
    expected = NearIndex(0.7, 64, 3).add(texts, list(range(len(texts))))
    groups = NearIndex(0.7, 64, 3).groups(texts)
    monkeypatch.setattr(shingles_module, "TEXT_CHUNK", 50)
    assert len(text_chunks(texts)) > 100
    chunked = ngram_hashes(texts, 3)
    assert np.array_equal(whole[0], chunked[0]) and np.array_equal(whole[1], chunked[1])
    assert NearIndex(0.7, 64, 3).add(texts, list(range(len(texts)))) == expected
    assert NearIndex(0.7, 64, 3).groups(texts) == groups
    assert sum(hit is not None for hit in expected) >= 40


def test_bucket_cap_bounds_the_offers_and_keeps_what_dedup_finds(monkeypatch):
    """A bucket that thousands of templated texts share offers each new text only its first `cap` texts, so the
    work per text stays flat as the input grows; true duplicates are still found through their other buckets."""
    rng = random.Random(7)
    vocab = [f"w{i}" for i in range(400)]
    template = "thank you for contacting harbor support we value you as a customer and appreciate it"
    texts = [" ".join([template, *rng.sample(vocab, 12)]) for _ in range(1500)]
    texts += [t + " thanks" for t in rng.sample(texts, 150)]  # near duplicates of earlier texts
    offered = []
    real = minhash.similarities
    monkeypatch.setattr(minhash, "similarities", lambda sk, me, rows: offered.append(len(rows)) or real(sk, me, rows))
    index = NearIndex(0.8, 128, 5, cap=8)
    hits = index.add(texts, list(range(len(texts))))
    assert max(offered) <= 8 * index.bands
    brute = {b for a, b in brute_links(texts, 0.8, 5)}
    found = {i for i, h in enumerate(hits) if h is not None}
    assert found <= brute and len(found) >= 0.97 * len(brute) >= 140


def test_bucket_ids_number_equal_keys():
    rng = np.random.default_rng(0)
    keys = rng.integers(0, 6, size=(60, 4)).astype(np.uint64)
    ids, shared = bucket_ids(keys)
    for j in range(4):
        for a, b in itertools.combinations(range(60), 2):
            assert (ids[a, j] == ids[b, j]) == (keys[a, j] == keys[b, j])
        assert shared[:, j].tolist() == [int((keys[:, j] == keys[i, j]).sum()) > 1 for i in range(60)]


def test_similarities_are_exact_jaccard():
    rng = random.Random(1)
    texts = [" ".join(rng.choice("abcdefgh") for _ in range(rng.randint(0, 12))) for _ in range(80)]
    sk = NearIndex(0.5, 64, 2).sketch(texts)
    sets = [set(shingles(t, 2)) for t in texts]
    for me in range(80):
        got = minhash.similarities(sk, me, np.arange(80))
        want = [len(sets[me] & s) / len(sets[me] | s) if sets[me] and s else 0.0 for s in sets]
        assert np.allclose(got, want)


def test_min_matches_is_the_binomial_bound():
    for t, n, miss in ((0.8, 128, 1e-6), (0.5, 128, 1e-6), (0.9, 64, 1e-3)):
        k = min_matches(t, n, miss)

        def below(m: int) -> float:  # P(Binomial(n, t) < m)
            return sum(math.comb(n, i) * t ** i * (1 - t) ** (n - i) for i in range(m))
        assert below(k) <= miss < below(k + 1)


def test_add_names_a_kept_duplicate():
    base = "where is my order it was supposed to arrive on monday and the tracking page has not moved since"
    texts = [base, base + " thanks", "completely different words about a refund for a broken lamp today", base]
    hits = NearIndex(0.8, 128, 3).add(texts, ["a", "b", "c", "d"])
    assert hits[0] is None and hits[2] is None
    assert hits[1][0] == "a" and 0.8 <= hits[1][1] < 1 and hits[3] == ("a", 1.0)
    assert brute_links(texts, 0.8, 3) == [(0, 1), (0, 3), (1, 3)]


def test_add_across_calls_dedups_against_earlier_calls():
    base = "where is my order it was supposed to arrive on monday and the tracking page has not moved since"
    index = NearIndex(0.8, 128, 3)
    assert index.add([base, "a refund for a broken lamp please today now"], ["a", "b"]) == [None, None]
    assert index.add(["something else entirely new words here", base + " thanks"], ["c", "d"])[1][0] == "a"
    assert index.labels == ["a", "b", "c"]


def test_groups_are_the_components_of_the_similar_pairs():
    rng = random.Random(5)
    texts = [" ".join(rng.choice(["order", "late", "box", "refund", "lamp", "card"]) for _ in range(rng.randint(3, 12)))
             for _ in range(400)]
    links = brute_links(texts, 0.5, 2)
    parent = list(range(len(texts)))

    def find(i: int) -> int:
        return i if parent[i] == i else find(parent[i])
    for a, b in links:
        ra, rb = find(a), find(b)
        parent[max(ra, rb)] = min(ra, rb)
    expected = [find(i) for i in range(len(texts))]
    assert len(set(expected)) < len(texts) - 50  # there are clusters to join
    got = NearIndex(0.5, 64, 2).groups(texts)
    assert all(expected[i] == expected[got[i]] for i in range(len(texts)))  # never links texts below the threshold
    assert all(got[i] <= i and got[got[i]] == got[i] for i in range(len(texts)))  # named by the group's first text
    assert got == NearIndex(0.5, 64, 2, cap=len(texts)).groups(texts)  # the cap changes nothing here
    # LSH misses pairs near the threshold (64 slots, 16 bands of 4 rows: a pair at 0.5 is offered 65% of the time)
    assert sum(got[a] == got[b] for a, b in links) >= 0.75 * len(links)


def test_join_and_stream_sketch_equal_plain_concatenation(tmp_path):
    """Parts joined into arrays allocated once, and a stream's sketch read shard by shard (all rows or some), hold
    exactly what concatenating the parts holds."""
    from sftpipe.curate.decide import Stream
    from sftpipe.curate.shard import sketch_arrays

    rng = random.Random(0)
    words = [f"w{i}" for i in range(40)]
    index = NearIndex(0.5, 32, 2)
    parts = [index.sketch([" ".join(rng.choices(words, k=rng.randint(0, 12))) for _ in range(n)]) for n in (5, 0, 7)]
    whole = index.sketch([])  # the plain concatenation, field by field
    sig, keys, flat = (np.concatenate([getattr(p, f) for p in parts]) for f in ("sig", "keys", "flat"))
    sizes = np.concatenate([np.diff(p.offsets) for p in parts])
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    joined = minhash.Sketch.join(iter(parts), len(sig), len(flat))
    stems = []
    for k, part in enumerate(parts):
        np.savez(tmp_path / f"{k}.npz", **{f"v_{name}": a for name, a in sketch_arrays(part).items()})
        stems.append(tmp_path / str(k))
    stream = Stream("", stems, {})
    rows = np.array([0, 3, 5, 6, 11])
    some = stream.sketch("v", rows)
    for got, want in [(joined, (sig, keys, flat, offsets)), (stream.sketch("v"), (sig, keys, flat, offsets))]:
        for a, b in zip((got.sig, got.keys, got.flat, got.offsets), want):
            assert np.array_equal(a, b)
    taken = minhash.Sketch(sig, keys, flat, offsets.astype(np.int64)).take(rows)
    for a, b in zip((some.sig, some.keys, some.flat, some.offsets), (taken.sig, taken.keys, taken.flat, taken.offsets)):
        assert np.array_equal(a, b)
    assert len(whole) == 0 and np.array_equal(stream.sizes("v"), sizes)
