"""quality: a heuristic score in [0, 1] per record (plus an optional judge on a sample); drop the low end.

The heuristic is the product of five parts in [0, 1] computed on the assistant replies, so one bad trait
sinks the score: length (too short or very long replies score low), repetition (share of repeated word
3-grams and lines), letters (share of alphabetic characters outside code), shouting (share of upper-case
letters) and echo (a reply that repeats the prompt).
Records below `min_score` are dropped (`low_quality`); then only the best `keep_top` share of the records
that entered the stage is kept (`below_top_share`), ties broken by input order.
"""

from __future__ import annotations

import math
import random
import re
from typing import Any

from ..chat_client import ChatClient, api_key
from ..conversation import Conversation
from .base import Drop, norm_text
from ..config.curate import JudgeConfig, QualityConfig

_CODE = re.compile(r"```.*?```", re.S)
JUDGE_PROMPT = ("Rate the assistant's replies in the conversation below for helpfulness, correctness, tone and "
                "following the company's policy, on a scale from 1 (useless) to 10 (ideal). Answer with the number "
                "only.\n\n{conversation}")


def heuristic_parts(conv: Conversation) -> dict[str, float]:
    """The five heuristic parts, each in [0, 1] (1 = good).

    >>> from sftpipe.conversation import Message
    >>> heuristic_parts(Conversation([Message("user", "Hi"), Message("assistant", "NO NO NO NO")]))["shouting"]
    0.0
    """
    replies = [m.content for m in conv.messages if m.role == "assistant"]
    prompt = norm_text(" ".join(m.content for m in conv.messages if m.role == "user"))
    text = "\n".join(replies)
    words = norm_text(text).split()
    n = len(words)
    length = min(1.0, n / 15) if n < 15 else (1.0 if n <= 400 else max(0.3, 1.0 - (n - 400) / 1200))
    grams = [" ".join(words[i:i + 3]) for i in range(max(0, n - 2))]
    rep_grams = 1.0 - len(set(grams)) / len(grams) if grams else 0.0
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    rep_lines = 1.0 - len(set(lines)) / len(lines) if lines else 0.0
    repetition = max(0.0, 1.0 - 2.0 * max(rep_grams, rep_lines))
    prose = _CODE.sub(" ", text)
    visible = [ch for ch in prose if not ch.isspace()]
    letters = min(1.0, (sum(ch.isalpha() for ch in visible) / len(visible)) / 0.7) if visible else 0.0
    alpha = [ch for ch in prose if ch.isalpha()]
    upper = sum(ch.isupper() for ch in alpha) / len(alpha) if alpha else 0.0
    shouting = 1.0 if upper <= 0.3 else max(0.0, 1.0 - (upper - 0.3) / 0.4)
    echo = 0.0 if prompt and norm_text(text) == prompt else 1.0
    return {"length": round(length, 4), "repetition": round(repetition, 4), "letters": round(letters, 4),
            "shouting": round(shouting, 4), "echo": echo}


def heuristic_score(conv: Conversation) -> float:
    """Product of `heuristic_parts`."""
    return score_of(heuristic_parts(conv))


def score_of(parts: dict[str, float]) -> float:
    """The heuristic score of computed parts: their product, rounded.

    >>> score_of({"length": 1.0, "repetition": 0.5})
    0.5
    """
    return round(math.prod(parts.values()), 4)


def _render(conv: Conversation) -> str:
    return "\n\n".join(f"{m.role.upper()}: {m.content}" for m in conv.messages if m.role != "system")


def parse_rating(text: str) -> float | None:
    """A 1-10 rating in the judge's answer, scaled to [0, 1], or None.

    >>> parse_rating("8/10"), parse_rating("no idea")
    (0.7778, None)
    """
    m = re.search(r"\b(10|[1-9])(?:\.\d+)?\b", text)
    return round((int(m.group(1)) - 1) / 9, 4) if m else None


def endpoint_judge(cfg: JudgeConfig):
    """A judge function that asks an OpenAI-compatible /chat/completions endpoint (retrying transient failures)."""
    client = ChatClient(cfg.url, cfg.model, api_key(cfg.api_key_env), cfg.timeout_s, max_tokens=8,
                        name="quality judge endpoint", fix="start the server or set curate.quality.judge.url / "
                        "curate.quality.judge.model (any OpenAI-compatible API)")
    return lambda conv: client.complete(JUDGE_PROMPT.format(conversation=_render(conv)))


def local_judge(cfg: JudgeConfig):
    """A judge function backed by a local causal LM (greedy, 4 new tokens); loaded on first use."""
    from ..models import load_model, load_tokenizer

    tok, model = load_tokenizer(cfg.model), load_model(cfg.model)

    def judge(conv: Conversation) -> str:
        msgs = [{"role": "user", "content": JUDGE_PROMPT.format(conversation=_render(conv))}]
        ids = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        out = model.generate(**ids, max_new_tokens=4, do_sample=False)
        return tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    return judge


class Quality:
    """Score every record, judge a seeded sample if configured, drop low scores and keep the top share."""

    name = "quality"

    def __init__(self, cfg: QualityConfig, strict: bool = False, judge=None):
        self.cfg, self.strict = cfg, strict
        self.stats: dict[str, Any] = {}
        self._judge = judge  # tests pass a function conv -> answer text

    def judge_fn(self):
        """The configured judge function (built lazily)."""
        if self._judge is None:
            self._judge = (endpoint_judge if self.cfg.judge.kind == "endpoint" else local_judge)(self.cfg.judge)
        return self._judge

    def _judged(self, convs, scores: list[float]) -> dict[int, float]:
        cfg = self.cfg.judge
        picked = sorted(random.Random(cfg.seed).sample(range(len(scores)), min(cfg.sample, len(scores))))
        ratings: dict[int, float] = {}
        failed = 0
        for i in picked:
            try:
                r = parse_rating(self.judge_fn()(convs[i]))
            except Exception:
                if self.strict:
                    raise
                r = None
            if r is None:
                failed += 1
            else:
                ratings[i] = r
        self.stats.update({"judged": len(ratings), "judge_failed": failed})
        if len(ratings) >= 3:
            self.stats["judge_heuristic_corr"] = _pearson([scores[i] for i in ratings], list(ratings.values()))
        return ratings

    def apply(self, convs: list[Conversation], pool=None, progress=None) -> tuple[list[Conversation], list[Drop]]:
        found = self.decide([heuristic_score(c) for c in convs], convs, lambda k: heuristic_parts(convs[k]))
        if progress:
            progress(len(convs))
        return ([c for i, c in enumerate(convs) if i not in found],
                [Drop(convs[i], self.name, *found[i]) for i in sorted(found)])

    def decide(self, scores: list[float], convs, parts) -> dict[int, tuple[str, dict]]:
        """Row -> (reason, details) for the rows to drop, given each row's heuristic score; `convs` (a sequence)
        is read only for the judged sample, `parts(row)` gives a dropped row's score parts."""
        judged = self._judged(convs, scores) if self.cfg.judge.enabled and scores else {}
        w = self.cfg.judge.weight
        final = [round((1 - w) * s + w * judged[i], 4) if i in judged else s for i, s in enumerate(scores)]
        drops: dict[int, tuple[str, dict]] = {}
        for i, s in enumerate(final):
            if s < self.cfg.min_score:
                drops[i] = ("low_quality", {"score": s, "min_score": self.cfg.min_score, "parts": parts(i),
                                            **({"judge": judged[i]} if i in judged else {})})
        if self.cfg.keep_top < 1.0:
            keep_n = math.ceil(self.cfg.keep_top * len(scores))
            ranked = sorted((i for i in range(len(scores)) if i not in drops), key=lambda i: (-final[i], i))
            cutoff = final[ranked[keep_n - 1]] if 0 < keep_n <= len(ranked) else None
            for i in ranked[keep_n:]:
                drops[i] = ("below_top_share", {"score": final[i], "cutoff": cutoff, "keep_top": self.cfg.keep_top})
        if final:
            self.stats["mean_score"] = round(sum(final) / len(final), 4)
        return drops


def _pearson(xs: list[float], ys: list[float]) -> float | None:
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sx = math.sqrt(sum((x - mx) ** 2 for x in xs))
    sy = math.sqrt(sum((y - my) ** 2 for y in ys))
    return round(sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / (sx * sy), 4) if sx and sy else None
