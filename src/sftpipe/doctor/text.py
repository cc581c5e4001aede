"""Small text measures the data checks share: word shingles, near-duplicate pairs (MinHash LSH candidates,
verified by exact Jaccard), n-gram overlap with eval prompts, and a refusal detector."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable

from ..conversation import Conversation

_WORD = re.compile(r"\w+")
REFUSAL = re.compile(r"\b(I|we)\s*(can(?:'|’)?t|cannot|won(?:'|’)t|am unable|'m unable|are unable|am not able|"
                     r"'m not able)\b[^.!?\n]{0,60}\b(help|do|share|provide|assist|give|unlock|refund|issue|"
                     r"process|change|offer|discuss|comply)\b", re.IGNORECASE)


def words(text: str) -> list[str]:
    """Lower-cased word tokens.

    >>> words("Order HB-1, please!")
    ['order', 'hb', '1', 'please']
    """
    return _WORD.findall(text.lower())


def shingles(text: str, n: int = 5) -> set[str]:
    """Word n-grams (the whole text when it is shorter than n words).

    >>> sorted(shingles("a b c d", 3))
    ['a b c', 'b c d']
    """
    w = words(text)
    return {" ".join(w[i:i + n]) for i in range(max(1, len(w) - n + 1))} if w else set()


def record_label(conv: Conversation, i: int) -> str:
    """How evidence names record `i`: its id, else file:line, else #i."""
    rid = conv.meta.get("id")
    if rid is not None:
        return str(rid)
    return f"{conv.source.path}:{conv.source.line}" if conv.source else f"#{i}"


def prompt_text(conv: Conversation) -> str:
    """The user turns of a conversation."""
    return "\n".join(m.content for m in conv.messages if m.role == "user")


def jaccard(a: set, b: set) -> float:
    """|a & b| / |a | b|.

    >>> jaccard({1, 2}, {2, 3})
    0.3333333333333333
    """
    return len(a & b) / len(a | b) if a or b else 0.0


def near_pairs(left: list[str], right: list[str] | None = None, threshold: float = 0.8, num_perm: int = 64
               ) -> list[tuple[int, int, float]]:
    """Pairs (i, j, similarity) with Jaccard(5-word shingles) >= threshold: within `left` (i < j), or between
    `left` and `right`. Candidates come from MinHash LSH bands (rensa), then the exact Jaccard decides."""
    import rensa

    rows = 4
    bands = num_perm // rows
    sets_l = [shingles(t) for t in left]
    sets_r = sets_l if right is None else [shingles(t) for t in right]

    def signature(s: set[str]) -> list[int]:
        m = rensa.RMinHash(num_perm=num_perm, seed=0)
        m.update(sorted(s) or [""])
        return m.digest()

    buckets: dict[tuple, list[int]] = defaultdict(list)
    for j, s in enumerate(sets_r):
        sig = signature(s)
        for b in range(bands):
            buckets[(b, *sig[b * rows:(b + 1) * rows])].append(j)
    pairs: dict[tuple[int, int], float] = {}
    for i, s in enumerate(sets_l):
        sig = signature(s)
        for b in range(bands):
            for j in buckets.get((b, *sig[b * rows:(b + 1) * rows]), []):
                if (right is None and j <= i) or (i, j) in pairs:
                    continue
                sim = jaccard(s, sets_r[j])
                if sim >= threshold:
                    pairs[(i, j)] = sim
    return [(i, j, round(sim, 3)) for (i, j), sim in sorted(pairs.items())]


def ngrams(text: str, n: int) -> set[str]:
    """Word n-grams of exactly n words (none when the text is shorter).

    >>> sorted(ngrams("a b c", 2)), ngrams("a", 2)
    (['a b', 'b c'], set())
    """
    w = words(text)
    return {" ".join(w[i:i + n]) for i in range(len(w) - n + 1)}


COPIED = 0.5  # an eval prompt with this share of its n-grams in training prompts is (nearly) a copy


class NgramIndex:
    """The word n-grams of some training prompts (`short_n`-grams too, for eval prompts under `short_words` words,
    as the curate decontaminate stage indexes them), asked for the share of an eval prompt's n-grams they hold."""

    def __init__(self, train_prompts: Iterable[str], n: int = 13, short_n: int = 8, short_words: int = 30):
        self.n, self.short_n, self.short_words = n, short_n, short_words
        self.grams: set[str] = set()
        self.short: set[str] = set()
        for t in train_prompts:
            self.grams |= ngrams(t, n)
            self.short |= ngrams(t, short_n)

    def share(self, prompt: str) -> float:
        """The share of the prompt's n-grams found in the training prompts (1.0: copied whole)."""
        short = len(words(prompt)) < self.short_words
        grams = ngrams(prompt, self.short_n if short else self.n)
        return len(grams & (self.short if short else self.grams)) / len(grams) if grams else 0.0


def overlap(train_prompts: Iterable[str], eval_prompts: list[str], n: int = 13, short_n: int = 8,
            short_words: int = 30) -> list[float]:
    """For each eval prompt, the share of its word n-grams found in the training prompts (`NgramIndex.share`).

    >>> overlap(["please tell me the capital city of france now", "x"], ["the capital city of france now", "y z"],
    ...         n=13, short_n=5)
    [1.0, 0.0]
    """
    index = NgramIndex(train_prompts, n, short_n, short_words)
    return [index.share(p) for p in eval_prompts]


def is_refusal(reply: str) -> bool:
    """A reply that declines something (the guide: refusals are learned only from refusal examples).

    >>> is_refusal("For your security I can't unlock accounts in chat."), is_refusal("Sure, here it is.")
    (True, False)
    """
    return bool(REFUSAL.search(reply))
