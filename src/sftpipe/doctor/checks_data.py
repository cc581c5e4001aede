"""Checks on the data as trained: curation ran on every source, the trained file is the curated one, no near-
duplicates left, eval sets decontaminated, and a stratified held-out split that shares nothing with train."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from ..curated import files_hash
from .base import Outcome, check, fail, ok, skip, warn, worst
from .context import Context
from .text import COPIED, near_pairs, overlap, prompt_text, record_label

REQUIRED_STAGES = ("pii", "dedup", "quality")  # the checklist's "deduplication, PII scrubbing, and quality scoring"
NEAR_DUP_RATE = 0.01  # share of training records with a near-duplicate left in train
STRATUM_GAP = 0.15  # total variation distance between train and eval category shares
NO_REPORT = "no curate report.json (see curation-ran)"


@check("curation-ran")
def curation_ran(ctx: Context) -> Outcome:
    """Checklist: "Run deduplication, PII scrubbing, and quality scoring on all sources."

    The curate report exists, its pii, dedup and quality stages ran (also on the mixed-in general source), and
    every record is accounted for (in = kept + rejected)."""
    path, report = ctx.curated
    if report is None:
        return fail(f"no curate report.json in {ctx.cfg.curate.out_dir} or beside {ctx.cfg.data.train[:1]}",
                    "run `sftpipe curate -c sftpipe.yaml` and train on its train.jsonl")
    c = report.get("counts", {})
    found = [ok(f"{path}: {c.get('in')} in, {c.get('kept')} kept, {c.get('rejected')} rejected; stages "
                + ", ".join(s["stage"] for s in report.get("stages", []) if "/" not in s["stage"]))]
    missing = [s for s in REQUIRED_STAGES if ctx.stage(s) is None]
    if missing:
        found.append(fail(f"{path}: stage(s) {', '.join(missing)} did not run",
                          f"enable curate.{', curate.'.join(missing)} and re-run `sftpipe curate`"))
    if ctx.stage("mix") is not None:
        mix_missing = [s for s in REQUIRED_STAGES if s != "quality" and ctx.stage(f"mix/{s}") is None]
        if mix_missing:
            found.append(warn(f"the mixed-in general source skipped {', '.join(mix_missing)}",
                              "run every curation stage on every source"))
    reasons = sorted((report.get("rejected_by_reason") or {}).items(), key=lambda kv: -kv[1])[:3]
    top = ", ".join(f"{k} {v}" for k, v in reasons) or "none"
    if not c.get("train"):
        found.append(fail(f"{path}: curate kept no training record (top rejections: {top})",
                          "look at rejected.jsonl for the reason, fix the config or data, re-run `sftpipe curate`"))
    if c.get("in") != (c.get("kept") or 0) + (c.get("rejected") or 0):
        found.append(fail(f"{path}: counts do not add up ({c})", "re-run `sftpipe curate`"))
    return worst(*found)


@check("data-hash")
def data_hash(ctx: Context) -> Outcome:
    """Checklist: "Log checkpoints with data hash, hyperparameters, and eval rubric scores."

    The training file's content hash equals the curate report's hash of train.jsonl and the run's data.train_hash:
    the run trained on the curated data, unchanged; the held-out eval.jsonl is the curated one too."""
    path, report = ctx.curated
    if report is None:
        return skip(NO_REPORT)
    files = [p for p in ctx.cfg.data.train if Path(p).is_file()]
    if not files:
        return fail(f"data.train {ctx.cfg.data.train} does not exist", "point data.train at curated/train.jsonl")
    now = files_hash(files)
    curated = (report.get("hashes") or {}).get("train.jsonl")
    found = [ok(f"{', '.join(files)} sha256 {now[:12]} = report.json train.jsonl")]
    if now != curated:
        found.append(fail(f"{', '.join(files)} sha256 {now[:12]} != {path} train.jsonl {str(curated)[:12]}",
                          "train on the curated train.jsonl unchanged, or re-run `sftpipe curate`"))
    trained = (ctx.info.data.get("train_hash") if ctx.info else None)
    if ctx.info is not None:
        if trained != now:
            found.append(fail(f"{ctx.run_dir}/run.json data.train_hash {str(trained)[:12]} != the file now "
                              f"({now[:12]})", "re-train on the current data, or restore the data the run used"))
        else:
            found[0] = ok(found[0].evidence + f" = {ctx.run_dir}/run.json data.train_hash")
    held = [p for p in ctx.cfg.data.eval if Path(p).is_file()]
    held_now = files_hash(held) if held else None
    held_curated = (report.get("hashes") or {}).get("eval.jsonl")
    if held_now and held_curated and len(held) == 1 and Path(held[0]).name == "eval.jsonl" \
            and held_now != held_curated:
        found.append(fail(f"{held[0]} sha256 {held_now[:12]} != {path} eval.jsonl {held_curated[:12]}: the held-out "
                          "set changed since curate", "restore the curated eval.jsonl or re-run `sftpipe curate`"))
    return worst(*found)


@check("near-duplicates")
def near_duplicates(ctx: Context) -> Outcome:
    """Quality filter: "Deduplication by MinHash or embedding cosine — near-duplicate prompts cause memorization."

    Near-duplicate conversations (Jaccard of 5-word shingles >= curate.dedup.near.threshold) left in train stay
    below 1%, and train and eval share none."""
    if not ctx.train:
        return skip("no training data (data.train is empty or missing)")
    thr = ctx.cfg.curate.dedup.near.threshold
    texts = [c.dialogue_text() for c in ctx.train]
    pairs = near_pairs(texts, threshold=thr)
    dups = sorted({j for _, j, _ in pairs})
    rate = len(dups) / len(texts)
    found = [ok(f"{len(dups)}/{len(texts)} training conversations have a near-duplicate (Jaccard >= {thr:g}) "
                f"in train ({rate:.2%})")]
    if rate > NEAR_DUP_RATE:
        ex = ", ".join(f"{record_label(ctx.train[i], i)}~{record_label(ctx.train[j], j)} ({s})"
                       for i, j, s in pairs[:3])
        found.append(warn(f"{len(dups)}/{len(texts)} ({rate:.1%}) training conversations are near-duplicates, "
                          f"above {NEAR_DUP_RATE:.0%} (e.g. {ex})",
                          "enable curate.dedup.near (or lower its threshold) and re-run `sftpipe curate`"))
    if ctx.eval:
        shared = near_pairs([c.dialogue_text() for c in ctx.eval], texts, threshold=thr)
        if shared:
            ex = ", ".join(f"eval {record_label(ctx.eval[i], i)}~train {record_label(ctx.train[j], j)} ({s})"
                           for i, j, s in shared[:3])
            found.append(fail(f"{len({i for i, _, _ in shared})}/{len(ctx.eval)} eval conversations near-duplicate "
                              f"training ones ({ex})", "split with curate.split (near-duplicates grouped into one "
                                                       "split) and re-run `sftpipe curate`"))
        else:
            found[0] = ok(found[0].evidence + f"; 0/{len(ctx.eval)} eval conversations near-duplicate train")
    return worst(*found)


def _benchmark_sets(ctx: Context) -> list[tuple[str, str]]:
    """(name, path) of eval sets that are not the curated held-out split (that one is near-duplicates' job)."""
    held = {Path(p).resolve() for p in ctx.cfg.data.eval}
    return [(s.name, s.path) for s in ctx.cfg.eval.sets if Path(s.path).is_file() and Path(s.path).resolve()
            not in held]


def eval_prompts(path: Path) -> list[tuple[str, str]]:
    """(id or path:line, user text) of each JSONL record of an eval set, prompt-only records included."""
    out = []
    if path.suffix != ".jsonl":
        return out
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not isinstance(rec, dict):
                continue
            msgs = rec.get("messages") or rec.get("conversations") or []
            text = "\n".join(str(m.get("content") or m.get("value") or "") for m in msgs
                             if isinstance(m, dict) and (m.get("role") or m.get("from")) in ("user", "human"))
            text = text or " ".join(str(rec.get(k) or "") for k in ("instruction", "input", "prompt")).strip()
            out.append((str(rec.get("id", f"{path}:{n}")), text))
    return out


@check("decontaminated")
def decontaminated(ctx: Context) -> Outcome:
    """Pitfall: "Ignoring contamination — Benchmark questions in training data inflate offline scores; dedupe
    against eval sets."

    Eval-set prompts (besides the held-out split) against training prompts by word 13-grams (8-grams under 30
    words), as curate's decontaminate stage: FAIL when half or more of a prompt's n-grams are in training prompts
    (a copy), WARN when it shares some (a phrase); and the decontaminate stage ran."""
    if not ctx.train:
        return skip("no training data (data.train is empty or missing)")
    d = ctx.cfg.curate.decontaminate
    train_prompts = [prompt_text(c) for c in ctx.train]
    found, checked = [], []
    for name, path in _benchmark_sets(ctx):
        evals = eval_prompts(Path(path))
        shares = overlap(train_prompts, [p for _, p in evals], d.ngram, d.short_ngram, d.short_words)
        copied = [evals[i][0] for i, s in enumerate(shares) if s >= COPIED]
        shared = [f"{evals[i][0]} ({s:.0%})" for i, s in enumerate(shares) if 0 < s < COPIED]
        checked.append(f"{name} {len(copied)} copied + {len(shared)} sharing a phrase /{len(evals)}")
        if copied:
            found.append(fail(f"{len(copied)}/{len(evals)} prompts of eval set {name} ({path}) are (nearly) copied "
                              f"from training prompts (>= {COPIED:.0%} of their n-grams; {', '.join(copied[:5])})",
                              f"drop them from the eval set, or add {name}: {path} to "
                              "curate.decontaminate.eval_sets and re-run `sftpipe curate`"))
        if shared:
            found.append(warn(f"{len(shared)}/{len(evals)} prompts of eval set {name} share a word n-gram with "
                              f"training prompts (e.g. {', '.join(shared[:3])})",
                              f"check that {name} tests unseen prompts (add it to curate.decontaminate.eval_sets to "
                              "drop training records that share its n-grams)"))
    stage = ctx.stage("decontaminate")
    if ctx.curated[1] is not None and stage is None:
        found.append(warn("the curate decontaminate stage did not run", "enable curate.decontaminate"))
    if not checked and stage is None:
        return skip("no eval set beside the held-out split to check, and no decontaminate stage in the report")
    sets = (ctx.curated[1] or {}).get("config", {}).get("decontaminate", {}).get("eval_sets", {})
    base = ok(f"contaminated prompts per eval set: {', '.join(checked) or 'none checked'}"
              + (f"; curate decontaminated against {', '.join(sets)}" if stage is not None else ""))
    return worst(base, *found)


@check("held-out-split")
def held_out_split(ctx: Context) -> Outcome:
    """Checklist: "Hold out stratified eval set; never tune on it."

    A held-out set exists, is stratified by the category field (the curate split's `by`, or close category shares),
    and no eval id or conversation is in train."""
    if not ctx.cfg.data.eval:
        return fail("data.eval is empty: no held-out set", "set data.eval to curated/eval.jsonl (curate.split "
                                                            "writes it)")
    if not ctx.eval:
        missing = [p for p in ctx.cfg.data.eval if not Path(p).is_file()]
        what = "does not exist" if missing else "holds no readable conversation"
        return fail(f"data.eval {missing or ctx.cfg.data.eval} {what}", "run `sftpipe curate` (its split writes "
                                                                         "eval.jsonl)")
    found = []
    same = {Path(p).resolve() for p in ctx.cfg.data.eval} & {Path(p).resolve() for p in ctx.cfg.data.train}
    if same:
        found.append(fail(f"{', '.join(map(str, same))} is both data.train and data.eval", "hold out a separate "
                                                                                            "eval split"))
    train_ids = {str(c.meta["id"]) for c in ctx.train if c.meta.get("id") is not None}
    eval_ids = [str(c.meta["id"]) for c in ctx.eval if c.meta.get("id") is not None]
    leaked = [i for i in eval_ids if i in train_ids]
    texts = {c.dialogue_text() for c in ctx.train}
    copies = [record_label(c, i) for i, c in enumerate(ctx.eval) if c.dialogue_text() in texts]
    if leaked or copies:
        ex = ", ".join(dict.fromkeys(leaked[:3] + copies[:3]))
        found.append(fail(f"{len(set(leaked) | set(copies))}/{len(ctx.eval)} eval records are in train (ids or "
                          f"exact copies: {ex})", "drop them from train (or re-split with curate.split)"))
    by = ctx.cfg.curate.split.by or "category"
    tr = Counter(str(c.meta.get(by)) for c in ctx.train if c.meta.get(by) is not None)
    ev = Counter(str(c.meta.get(by)) for c in ctx.eval if c.meta.get(by) is not None)
    split = ctx.stage("split")
    strat = ((ctx.curated[1] or {}).get("config") or {}).get("split", {}).get("by")
    if not ev:
        found.append(warn(f"eval records carry no {by!r} field: stratification cannot be checked",
                          "stratify the split by issue type (curate.split.by)"))
        base = ok(f"{len(ctx.eval)} held-out records, no id shared with train")
    else:
        cats = set(tr) | set(ev)
        gap = 0.5 * sum(abs(tr[k] / sum(tr.values()) - ev[k] / sum(ev.values())) for k in cats) if tr else 1.0
        base = ok(f"{len(ctx.eval)} held-out records over {len(ev)}/{len(cats)} {by} values, share gap "
                  f"{gap:.2f}; no eval id in train" + (f"; curate split stratified by {strat}" if split and strat
                                                      else ""))
        if not (split and strat) and gap > STRATUM_GAP:
            found.append(warn(f"eval {by} shares differ from train by {gap:.2f} (total variation > {STRATUM_GAP})",
                              f"split with curate.split.by: {by} so every issue type is held out in proportion"))
    return worst(base, *found)
