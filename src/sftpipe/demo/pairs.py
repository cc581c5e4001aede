"""Preference pairs for the Harbor demo's DPO stage: the same ticket answered twice, one reply ranked lower.

Chosen is the policy-compliant gold reply with a short opener (`replies.SHORT_OPENERS`). Rejected is the same
reply as the export writes it, behind its long empathetic opener (what SFT learns; the guide's "shorter empathetic
openers" are what DPO fixes), behind a long boilerplate opener (`noise.BOILERPLATE`), a hedging and verbose variant
of it, or a policy slip (an instant-refund promise, a wrong amount, a dropped fraud warning: the `noise`
injectors). Like the guide's 6,000 human-ranked pairs, at a scale a CPU
trains in minutes. Records are TRL prompt/chosen/rejected message lists with `id`, `category` and `variant`.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable

from . import noise as nz
from .facts import CATEGORY_WEIGHTS, allocate
from .policy import FRAUD_WARNING_CATEGORIES, check_thread
from .replies import short_opener

HEDGES = ["I'm not completely sure, but I think I might be able to help with this, so let me try my best.",
          "Great question! I'll do my very best to help, although I can't promise anything just yet.",
          "Hmm, let me think about this for a moment, as there are a few things that could be going on here."]
CLOSERS = ["Please don't hesitate to reach out again if there is anything else at all that we can do for you.",
           "I hope this helps, and I hope you have a wonderful rest of your day!",
           "If you have any other questions, concerns or feedback, we are always here and happy to help."]
VARIANT_WEIGHTS = {"long_opener": 0.5, "boilerplate": 0.2, "hedging": 0.15, "policy_slip": 0.15}


def _slip(rng: random.Random, thread: dict) -> str | None:
    """The last reply with a policy slip the demo's checker flags, or None when none applies to this ticket."""
    options = []
    if thread["facts"].get("refund_due"):
        options += [nz.instant_refund, nz.wrong_amount]
    if thread["category"] in FRAUD_WARNING_CATEGORIES:
        options.append(nz.drop_fraud_warning)
    if not options:
        return None
    broken = copy.deepcopy(thread)
    rng.choice(options)(rng, broken)
    return broken["messages"][-1]["content"] if check_thread(broken) else None


def rejected_reply(rng: random.Random, thread: dict, variant: str) -> tuple[str, str]:
    """(variant actually used, the rejected reply) for a clean thread; a policy slip falls back to boilerplate
    where the ticket has no refund or fraud warning to get wrong."""
    original = thread["messages"][-1]["content"]
    chosen = short_opener(original, thread["category"])
    if variant == "long_opener":
        return variant, original
    if variant == "policy_slip":
        slipped = _slip(rng, thread)
        if slipped is not None and short_opener(slipped, thread["category"]) != chosen:
            return variant, short_opener(slipped, thread["category"])
        variant = "boilerplate"
    if variant == "hedging":
        return variant, f"{rng.choice(HEDGES)} {chosen}\n\n{rng.choice(CLOSERS)}"
    return "boilerplate", "\n\n".join(rng.choice(nz.BOILERPLATE)) + "\n\n" + chosen


def make_pairs(rng: random.Random, n: int, make_thread: Callable[[random.Random, str], dict]) -> list[dict]:
    """`n` preference pairs over the issue types (skewed like the export), from clean threads `make_thread` builds.

    >>> from sftpipe.demo.generate import make_thread
    >>> rows = make_pairs(random.Random(0), 4, make_thread)
    >>> [len(r["chosen"][0]["content"]) < len(r["rejected"][0]["content"]) or r["variant"] == "policy_slip"
    ...  for r in rows]
    [True, True, True, True]
    """
    cats = [c for c, k in allocate(n, CATEGORY_WEIGHTS).items() for _ in range(k)]
    rng.shuffle(cats)
    names, weights = list(VARIANT_WEIGHTS), list(VARIANT_WEIGHTS.values())
    rows = []
    for k, category in enumerate(cats):
        thread = make_thread(rng, category)
        variant, rejected = rejected_reply(rng, thread, rng.choices(names, weights)[0])
        rows.append({"id": f"P{k + 1:06d}", "category": category, "variant": variant,
                     "prompt": thread["messages"][:-1],
                     "chosen": [{"role": "assistant", "content": short_opener(thread["messages"][-1]["content"],
                                                                              category)}],
                     "rejected": [{"role": "assistant", "content": rejected}]})
    return rows
