"""Pairwise LLM judge over any OpenAI-compatible endpoint (through `sftpipe.chat_client`), with the position-bias and
verbosity-bias controls.

Each prompt is judged twice, candidate first and baseline first. A pair counts as a win only when both orders
agree; an inconsistent pair, or one with an unparsable verdict, counts as a tie. Win rate = (W + 0.5 T) / N with
a paired-bootstrap CI, plus a length-controlled win rate (stats.length_controlled_win_rate on reply characters).
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

from ..chat_client import ChatClient
from ..stats import judge_outcome, length_controlled_win_rate, paired_bootstrap_ci, win_rate

_FIELDS = re.compile(r"\{(conversation|reference|reply_a|reply_b)\}")
_TAG = re.compile(r"\[\[\s*(a|b|c|tie)\s*\]\]", re.IGNORECASE)  # MT-Bench style [[A]] / [[B]] / [[C]] (tie)
_VERDICT = re.compile(
    r"^(?:(?:final\s+)?(?:verdict|answer|winner|choice|decision|better reply|better response)\s*(?:is|:|-|=)?\s*)?"
    r"(?:(?:reply|response|assistant|answer|output)\s+)?(a|b|tie|draw|equal|both equal|neither)$")
_WORDS = {"a": "A", "b": "B", "c": "tie"}


def default_rubric() -> str:
    """The shipped rubric prompt (evaluate/data/judge_rubric.md)."""
    return (resources.files("sftpipe.evaluate") / "data" / "judge_rubric.md").read_text(encoding="utf-8")


def load_rubric(path: str | None) -> str:
    """A rubric file's text (default: the shipped one); it must use all four placeholders."""
    text = default_rubric() if path is None else Path(path).read_text(encoding="utf-8")
    missing = {"conversation", "reference", "reply_a", "reply_b"} - set(_FIELDS.findall(text))
    if missing:
        raise ValueError(f"judge rubric {path or 'default'} lacks placeholder(s) {sorted(missing)}; fix: write "
                         "{conversation}, {reference}, {reply_a} and {reply_b} where they belong")
    return text


def fill_rubric(rubric: str, conversation: list[dict], reply_a: str, reply_b: str, reference: str | None) -> str:
    """The judge prompt: placeholders filled in one pass, so braces inside the replies stay as written."""
    convo = "\n\n".join(f"[{m['role']}]\n{m['content']}" for m in conversation)
    values = {"conversation": convo, "reference": reference or "(none)", "reply_a": reply_a, "reply_b": reply_b}
    return _FIELDS.sub(lambda m: values[m.group(1)], rubric)


def _clean(line: str) -> str:
    line = re.sub(r"[*_`#>\"'\u201c\u201d]", "", line).strip().lower()
    line = re.sub(r"^[\[(]+|[\])]+$", "", line).strip()
    return re.sub(r"\s+", " ", line.rstrip(".!:; ")).strip()


def parse_verdict(text: str | None) -> str:
    """"A", "B" or "tie" from a judge reply; anything unclear is "invalid".

    Accepts a bare verdict ("A", "**B**", "Tie."), a labelled one ("Verdict: A", "Reply B") on the first or
    last line, or one MT-Bench tag ([[A]], [[B]], [[C]] = tie).

    >>> [parse_verdict(t) for t in ["A", "**B**.", "Verdict: tie", "[[C]]", "A\\nbecause...", "I like A", "A or B"]]
    ['A', 'B', 'tie', 'tie', 'A', 'invalid', 'invalid']
    """
    if not text or not text.strip():
        return "invalid"
    tags = {_WORDS.get(t.lower(), "tie") for t in _TAG.findall(text)}
    if tags:
        return tags.pop() if len(tags) == 1 else "invalid"
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    found = set()
    for line in {lines[0], lines[-1]}:
        m = _VERDICT.match(_clean(line))
        if m:
            found.add(_WORDS.get(m.group(1), "tie"))
    return found.pop() if len(found) == 1 else "invalid"


@dataclass
class PairJudgement:
    """Both orders of one prompt: verdicts name positions ("A" = the first reply shown)."""

    id: str
    set: str
    first: str  # candidate shown as A
    second: str  # baseline shown as A
    outcome: float  # for the candidate: 1 win, 0.5 tie, 0 loss
    raw_first: str
    raw_second: str
    len_candidate: int
    len_baseline: int


def judge_pairs(client: ChatClient, rubric: str, items: list, candidate: list[str], baseline: list[str], *,
                concurrency: int = 4) -> list[PairJudgement]:
    """Judge every item in both orders (2 requests per item, `concurrency` at a time)."""
    if not len(items) == len(candidate) == len(baseline):
        raise ValueError(f"need one candidate and one baseline reply per item, got {len(items)} items, "
                         f"{len(candidate)} and {len(baseline)} replies")
    prompts = []
    for it, c, b in zip(items, candidate, baseline):
        prompts.append(fill_rubric(rubric, it.prompt, c, b, it.target))
        prompts.append(fill_rubric(rubric, it.prompt, b, c, it.target))
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        raw = list(pool.map(client.complete, prompts))
    out = []
    for k, (it, c, b) in enumerate(zip(items, candidate, baseline)):
        first, second = parse_verdict(raw[2 * k]), parse_verdict(raw[2 * k + 1])
        out.append(PairJudgement(it.id, it.set, first, second, judge_outcome(first, second), raw[2 * k],
                                 raw[2 * k + 1], len(c), len(b)))
    return out


def summarize(pairs: list[PairJudgement], *, n_boot: int = 2000, seed: int = 0) -> dict:
    """Win rate with its paired-bootstrap CI, the length-controlled win rate and the counts behind them."""
    if not pairs:
        return {"n": 0}
    outcomes = [p.outcome for p in pairs]
    lo, hi = paired_bootstrap_ci(outcomes, n_boot=n_boot, seed=seed)
    valid = {"A", "B", "tie"}
    return {
        "n": len(pairs), "wins": sum(o == 1.0 for o in outcomes), "losses": sum(o == 0.0 for o in outcomes),
        "ties": sum(o == 0.5 for o in outcomes),
        "inconsistent": sum(p.first in ("A", "B") and p.second in ("A", "B") and p.outcome == 0.5 for p in pairs),
        "invalid_verdicts": sum((p.first not in valid) + (p.second not in valid) for p in pairs),
        "win_rate": round(win_rate(outcomes), 4), "ci95": [round(lo, 4), round(hi, 4)],
        "length_controlled_win_rate": round(length_controlled_win_rate(
            outcomes, [p.len_candidate for p in pairs], [p.len_baseline for p in pairs]), 4),
        "length_unit": "characters",
    }


def pair_rows(pairs: list[PairJudgement]) -> list[dict]:
    """The judgements as JSON rows (for eval/judge_<label>.jsonl)."""
    return [asdict(p) for p in pairs]
