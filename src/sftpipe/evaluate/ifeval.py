"""IFEval: load the shipped prompt set, check responses, and score them (strict prompt and instruction level).

The data is a byte-exact copy of the upstream file (see data/NOTICE.md); the checkers live in ifeval_checks.py.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources

from .ifeval_checks import CHECKERS

IFEVAL_FILE = "ifeval_input_data.jsonl"
IFEVAL_SHA256 = "67ffeee0fcb87c317c5b08a2de85557b4a7e96ada6178aa645b4954fe4b53d49"


@dataclass(frozen=True)
class IFEvalItem:
    """One IFEval prompt: `kwargs[i]` holds the arguments of `instruction_id_list[i]`."""

    key: int
    prompt: str
    instruction_id_list: list[str]
    kwargs: list[dict]


def _read_items() -> list[IFEvalItem]:
    raw = (resources.files("sftpipe.evaluate") / "data" / IFEVAL_FILE).read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    if digest != IFEVAL_SHA256:
        raise ValueError(f"shipped {IFEVAL_FILE} has sha256 {digest}, expected {IFEVAL_SHA256}; "
                         "restore the byte-exact upstream copy (see data/NOTICE.md)")
    rows = [json.loads(line) for line in raw.decode("utf-8").splitlines() if line.strip()]
    return [IFEvalItem(r["key"], r["prompt"], r["instruction_id_list"], r["kwargs"]) for r in rows]


def load_ifeval(subset: int | None = None, seed: int = 0) -> list[IFEvalItem]:
    """All 541 items, or a deterministic `subset` of them, in file order.

    The subset is stratified by coverage: after a seeded shuffle, it first takes one item for each instruction
    id not yet covered (ids in sorted order), then fills up with the next items of the shuffle.
    """
    items = _read_items()
    if subset is None:
        return items
    if not 1 <= subset <= len(items):
        raise ValueError(f"subset={subset} is out of range; use 1..{len(items)} or None for all items")
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    chosen: list[int] = []
    covered: set[str] = set()
    for iid in sorted({i for item in items for i in item.instruction_id_list}):
        if iid in covered or len(chosen) == subset:
            continue
        pick = next(j for j in order if iid in items[j].instruction_id_list and j not in chosen)
        chosen.append(pick)
        covered.update(items[pick].instruction_id_list)
    taken = set(chosen)
    chosen += [j for j in order if j not in taken][: subset - len(chosen)]
    return [items[j] for j in sorted(chosen)]


def check_instruction(instruction_id: str, response: str, kwargs: dict, prompt: str) -> bool:
    """Strict check of one instruction; an empty (whitespace-only) response never follows anything.

    `kwargs` are the item's arguments for this instruction (None values are ignored, as in the HF copy of the
    data). `prompt` is the item's prompt; none of the 25 upstream checkers needs more than its kwargs.
    """
    checker = CHECKERS.get(instruction_id)
    if checker is None:
        raise ValueError(f"unknown IFEval instruction id {instruction_id!r}; supported: {sorted(CHECKERS)}")
    args = {k: v for k, v in (kwargs or {}).items() if v is not None}
    expected = {p.name for p in inspect.signature(checker).parameters.values() if p.kind is p.KEYWORD_ONLY}
    if set(args) != expected:
        raise ValueError(f"{instruction_id} (prompt {prompt[:40]!r}...) got kwargs {sorted(args)}, "
                         f"expected exactly {sorted(expected)}")
    if not response.strip():
        return False
    return bool(checker(response, **args))


def evaluate_ifeval(items: Sequence[IFEvalItem], responses: Sequence[str]) -> dict:
    """Strict IFEval scores: share of prompts with every instruction followed, share of instructions followed,
    and accuracy per instruction id."""
    if len(items) != len(responses):
        raise ValueError(f"got {len(items)} items but {len(responses)} responses; pass one response per item")
    if not items:
        raise ValueError("no IFEval items to evaluate; pass at least one item")
    prompts_ok, n_instructions, followed_total = 0, 0, 0
    per: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for item, response in zip(items, responses):
        followed = [check_instruction(iid, response, kw, item.prompt)
                    for iid, kw in zip(item.instruction_id_list, item.kwargs, strict=True)]
        prompts_ok += all(followed)
        n_instructions += len(followed)
        followed_total += sum(followed)
        for iid, ok in zip(item.instruction_id_list, followed):
            per[iid][0] += ok
            per[iid][1] += 1
    return {
        "prompt_level_strict": prompts_ok / len(items),
        "instruction_level_strict": followed_total / n_instructions,
        "n_prompts": len(items),
        "n_instructions": n_instructions,
        "per_instruction": {iid: ok / n for iid, (ok, n) in sorted(per.items())},
    }
