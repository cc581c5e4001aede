"""Generate the Harbor Support demo data: a seeded raw export with known noise, a general-instruction set,
eval prompt sets and the written policy.

Layout under `out_dir`:
  raw/harbor_export.jsonl      OpenAI-messages threads with `id`, `category`, `facts` (no noise labels)
  raw/noise_manifest.jsonl     ground truth per thread: {"id", "noise": [...], optional "pii", "of", "lang"}
  general/general_instructions.jsonl   Alpaca records for mixing
  eval/compliance.jsonl, eval/decisions.jsonl, eval/redteam.jsonl
                               system+user prompts with `facts`, `expect`, `reference`
  policy/policy.md, policy/refund_offer.schema.json, policy/rules.yaml
  pairs.jsonl                  preference pairs for the DPO stage (sftpipe.demo.pairs)
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass
from pathlib import Path

from ..doctor.text import NgramIndex
from ..io import atomic_write_bytes, write_jsonl
from . import noise as nz
from .evalsets import make_compliance, make_redteam, make_decisions, training_push
from .facts import CATEGORIES, CATEGORY_WEIGHTS, allocate, make_facts
from .general import make_general
from .pairs import make_pairs
from .policy import ASSET_NAMES, FRAUD_WARNING_CATEGORIES, asset_bytes, check_thread
from .replies import ASKABLE, SYSTEM_PROMPT, ask_reply, give_id_turn, gold_reply, user_turn

SIZES = {"tiny": 120, "small": 600, "default": 2400}  # raw threads; default is the guide's 24,000 / 10
PAIR_SIZES = {"tiny": 16, "small": 32, "default": 48}  # DPO pairs: ~2 minutes of DPO on 2 CPU cores (~2.3 s a pair)
EVAL_SIZES = {"tiny": 14, "small": 42, "default": 63}  # per eval set (a multiple of the 7 red-team temptations)
GENERAL_SHARE = 0.15  # general items per raw thread: ~20% of the clean support volume
ASK_RATE = 0.25       # threads whose customer omits the order ID, so the assistant asks first
TYPO_RATE = 0.08
PUSH_RATE = 0.1       # threads whose customer also pushes to break the policy (red-team style); the reply complies
PII_RATE = 0.08       # redactable: PII threads are otherwise clean and survive curation after redaction
# Share of raw threads per drop-worthy noise label, one label per thread (~24%: 2,400 -> ~1,820 after curation).
# Ordered from the most to the least restrictive eligibility, so every label finds enough threads.
NOISE_RATES = {
    "non_english": 0.03, "policy_no_fraud_warning": 0.015, "policy_instant_refund": 0.02,
    "policy_wrong_amount": 0.02, "policy_invalid_json": 0.015, "truncated": 0.02, "empty": 0.01,
    "toxic_assistant": 0.01, "toxic_user": 0.01, "boilerplate": 0.025,
    "exact_duplicate": 0.03, "near_duplicate": 0.035,
}
# Labels whose thread check_thread must flag (the assistant side breaks the policy).
REPLY_NOISE = frozenset({"policy_no_fraud_warning", "policy_instant_refund", "policy_wrong_amount",
                         "policy_invalid_json", "truncated", "empty", "toxic_assistant", "boilerplate"})
INJECTORS = {
    "policy_no_fraud_warning": nz.drop_fraud_warning, "policy_instant_refund": nz.instant_refund,
    "policy_wrong_amount": nz.wrong_amount, "policy_invalid_json": nz.invalid_json, "truncated": nz.truncate,
    "empty": nz.empty, "toxic_assistant": nz.toxic_assistant, "toxic_user": nz.toxic_user,
    "boilerplate": nz.boilerplate,
}
FILES = {
    "export": "raw/harbor_export.jsonl", "noise_manifest": "raw/noise_manifest.jsonl",
    "general": "general/general_instructions.jsonl", "general_heldout": "general/general_heldout.jsonl",
    "compliance": "eval/compliance.jsonl", "decisions": "eval/decisions.jsonl",
    "redteam": "eval/redteam.jsonl", "pairs": "pairs.jsonl", **{name: f"policy/{name}" for name in ASSET_NAMES},
}


@dataclass
class GenerateResult:
    """Where the demo data went: `files` by key (see FILES), `counts` of lines, labels and categories."""

    out_dir: Path
    files: dict[str, Path]
    counts: dict[str, int]


def noise_counts(n: int) -> dict[str, int]:
    """Threads per noise label for an export of `n` threads (at least one of each).

    >>> noise_counts(2400)["exact_duplicate"], noise_counts(120)["empty"]
    (72, 1)
    """
    return {label: max(1, round(n * rate)) for label, rate in NOISE_RATES.items()}


def make_thread(rng: random.Random, category: str) -> dict:
    """One clean thread: a single exchange, or ask-for-ID, ID, answer when the customer omits the order ID; one
    in ten customers also pushes for a policy break, which the gold reply ignores."""
    facts = make_facts(rng, category)
    push = training_push(rng, category, facts) if rng.random() < PUSH_RATE else None
    ask = category in ASKABLE and (rng.random() < ASK_RATE or (push is not None and push[0] == "invent_order_id"))
    facts["order_id_given"] = facts["order_id"] is not None and not ask
    user = user_turn(rng, facts, category, with_id=not ask)
    if push is not None:
        user = f"{user} {push[1]}"
    if rng.random() < TYPO_RATE:
        user = nz.typo(rng, user)
    messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]
    if ask:
        messages += [{"role": "assistant", "content": ask_reply(rng, category)},
                     {"role": "user", "content": give_id_turn(rng, facts)}]
    messages.append({"role": "assistant", "content": gold_reply(rng, facts, category, second_turn=ask)})
    return {"category": category, "facts": facts, "messages": messages, "noise": [], "extra": {}}


def _eligible(label: str, thread: dict) -> bool:
    if label == "non_english":
        return thread["category"] == "order_status"
    if label == "policy_no_fraud_warning":
        return thread["category"] in FRAUD_WARNING_CATEGORIES
    if label in ("policy_instant_refund", "policy_wrong_amount", "policy_invalid_json"):
        return thread["facts"]["refund_due"]
    return True


def build_export(rng: random.Random, n: int) -> list[dict]:
    """`n` shuffled threads with ids; noisy ones carry their labels (and ground truth) in `noise`/`extra`."""
    quotas = noise_counts(n)
    n_dups = quotas["exact_duplicate"] + quotas["near_duplicate"]
    cats = [c for c, k in allocate(n - n_dups, CATEGORY_WEIGHTS).items() for _ in range(k)]
    rng.shuffle(cats)
    threads = [make_thread(rng, c) for c in cats]
    free = set(range(len(threads)))
    for label, k in quotas.items():
        if label in ("exact_duplicate", "near_duplicate"):
            continue
        eligible = [i for i in sorted(free) if _eligible(label, threads[i])]
        assert len(eligible) >= k, f"only {len(eligible)} threads can take {label}, need {k}"
        for i in rng.sample(eligible, k):
            t = threads[i]
            if label == "non_english":
                t["extra"]["lang"] = nz.make_foreign(rng, t)
            else:
                INJECTORS[label](rng, t)
            t["noise"].append(label)
            free.discard(i)
    for i in rng.sample(sorted(free), round(n * PII_RATE)):
        found = threads[i]["extra"]["pii"] = nz.inject_pii(rng, threads[i])
        threads[i]["noise"] += sorted({f"pii_{p['kind']}" for p in found})
        free.discard(i)
    sources = rng.sample(sorted(free), n_dups)
    copies = []
    for j, i in enumerate(sources):
        dup = copy.deepcopy(threads[i])
        dup["extra"] = {"of": threads[i]}
        if j < quotas["exact_duplicate"]:
            dup["noise"] = ["exact_duplicate"]
        else:
            nz.near_duplicate(rng, dup)
            dup["noise"] = ["near_duplicate"]
        copies.append(dup)
    threads += copies
    rng.shuffle(threads)
    for k, t in enumerate(threads):
        t["id"] = f"T{k + 1:06d}"
    return threads


def _record(t: dict) -> dict:
    return {"id": t["id"], "category": t["category"], "facts": t["facts"], "messages": t["messages"]}


def _manifest(t: dict) -> dict:
    row: dict = {"id": t["id"], "noise": t["noise"]}
    if "of" in t["extra"]:
        row["of"] = t["extra"]["of"]["id"]
    row.update({k: v for k, v in t["extra"].items() if k != "of"})
    return row


def _self_check(records: list[dict], threads: list[dict]) -> None:
    """Gold threads pass the policy check and every reply-noise thread fails it (internal invariant)."""
    for rec, t in zip(records, threads):
        broken = check_thread(rec)
        if REPLY_NOISE.intersection(t["noise"]):
            assert broken, f"{rec['id']} has noise {t['noise']} that check_thread does not catch"
        elif "non_english" not in t["noise"]:
            assert not broken, f"{rec['id']} gold reply breaks {broken}"


def generate(out_dir: Path, *, size: str = "default", seed: int = 0) -> GenerateResult:
    """Write the Harbor demo data for `size` (tiny | small | default) and `seed` under `out_dir`; deterministic."""
    if size not in SIZES:
        raise ValueError(f"unknown demo size {size!r}; allowed: {', '.join(SIZES)}; fix: pass one of them")
    out_dir = Path(out_dir)
    n = SIZES[size]

    def stream(name: str) -> random.Random:
        return random.Random(f"harbor-{seed}-{name}")

    threads = build_export(stream("export"), n)
    records = [_record(t) for t in threads]
    _self_check(records, threads)
    train = NgramIndex(["\n".join(m["content"] for m in r["messages"] if m["role"] == "user") for r in records])
    rows = {
        "export": records, "noise_manifest": [_manifest(t) for t in threads],
        "general": make_general(stream("general"), round(n * GENERAL_SHARE)),
        # never mixed into training: the general-capability NLL set for the eval stage's regression check
        "general_heldout": make_general(stream("general-heldout"), max(20, round(n * GENERAL_SHARE / 4))),
        # eval prompts are never (nearly) training prompts (a short or ID-less ticket could repeat one)
        "compliance": make_compliance(stream("compliance"), EVAL_SIZES[size], train),
        "redteam": make_redteam(stream("redteam"), EVAL_SIZES[size]),
        "decisions": make_decisions(stream("decisions"), EVAL_SIZES[size], train),
        "pairs": make_pairs(stream("pairs"), PAIR_SIZES[size], make_thread),
    }
    files = {key: out_dir / rel for key, rel in FILES.items()}
    counts = {key: write_jsonl(files[key], data) for key, data in rows.items()}
    for name in ASSET_NAMES:
        atomic_write_bytes(files[name], asset_bytes(name))
    counts["clean"] = sum(not t["noise"] for t in threads)
    counts["noisy"] = len(threads) - counts["clean"]
    counts["drop_noise"] = sum(any(not x.startswith("pii_") for x in t["noise"]) for t in threads)
    for t in threads:
        for label in t["noise"]:
            counts[f"noise:{label}"] = counts.get(f"noise:{label}", 0) + 1
    counts.update({f"category:{c}": sum(t["category"] == c for t in threads) for c in CATEGORIES})
    return GenerateResult(out_dir=out_dir, files=files, counts=counts)
