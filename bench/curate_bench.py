"""Curate benchmarks on generated Harbor Support data (prints ratios; asserts nothing).

1. near: near-dedup end to end (text in, drop decisions out, shingling included) on the 20,000-conversation
   export: sftpipe.curate.minhash.NearIndex against datasketch. Fair by construction: the same texts, the same
   normalized word 5-gram shingles (`shingles`), threshold 0.8, num_perm 128, the same LSH bands/rows, the same
   greedy keep-first rule and the same decision (exact Jaccard of the shingle sets) on LSH candidates.
   datasketch runs as documented (MinHash(num_perm, seed).update_batch + MinHashLSH insert/query, default sha1
   hash), and once more with xxhash's xxh32 as its hash function (a faster variant). Each side is timed
   `--reps` times; the best run counts. Prints docs/s, the speed ratio (target >= 10x) and the agreement on
   which records are dropped (target >= 0.99).
2. pii: recall and precision (targets 0.98 / 0.95) on the labelled synthetic set (sftpipe.curate.pii_synth)
   and on the Harbor generator's own noise manifest (written independently of the recognizers); per type on the
   hand-labelled set tests/assets/pii/labelled.jsonl (names of many languages and scripts, addresses of ~25
   countries, hard negatives; overall and per split: dev, heldout, blind, see its README); and the speed of the
   pii stage (Pii.process, default config) on the Harbor `default` export, best of `--reps` runs (CPU seconds).
3. harbor: configs/harbor-curate.yaml on the Harbor `default` export, scored against raw/noise_manifest.jsonl:
   per noise label the share of threads dropped (and by which stage/reason), and the clean threads dropped.
4. pipeline: whole-pipeline throughput on 20,000 conversations (default curate config plus mixing).

    .venv/bin/python bench/curate_bench.py [--n 20000] [--workers 2] [--only near,pii,harbor,pipeline]
                                           [--out bench/results/curate_bench.json]

With --only, an existing --out file keeps the sections that were not run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections import Counter
from pathlib import Path

from sftpipe.config import load_config
from sftpipe.curate.base import key_text
from sftpipe.curate.minhash import NearIndex, lsh_bands
from sftpipe.curate.shingles import shingles
from sftpipe.config.curate import PiiConfig
from sftpipe.curate.pii import Pii, find_pii
from sftpipe.curate.pii_synth import make_set, score, score_by_type
from sftpipe.demo.generate import generate
from sftpipe.readers import read_conversations
from sftpipe.stages.curate import run as run_curate_stage

ROOT = Path(__file__).resolve().parents[1]


def harbor(n: int, folder: Path) -> tuple[Path, Path, list[Path]]:
    """An export of n threads made of Harbor `default` exports with seeds 0, 1, ... (ids prefixed by seed)."""
    rows, manifests, general = [], [], None
    seed = 0
    while len(rows) < n:
        res = generate(folder / f"s{seed}", size="default", seed=seed)
        for line in res.files["export"].read_text(encoding="utf-8").splitlines():
            rec = json.loads(line)
            rec["id"] = f"s{seed}-{rec['id']}"
            rows.append(rec)
        if seed == 0:
            manifests = [res.files["export"], res.files["noise_manifest"]]
            general = res.files["general"]
        seed += 1
    export = folder / "export.jsonl"
    export.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows[:n]), encoding="utf-8")
    return export, general, manifests


def near_sftpipe(texts: list[str], threshold: float, num_perm: int, n: int) -> set[int]:
    """Indexes of the texts that sftpipe's greedy keep-first near-dedup drops."""
    hits = NearIndex(threshold, num_perm, n).add(texts, list(range(len(texts))))
    return {i for i, hit in enumerate(hits) if hit is not None}


def near_datasketch(texts: list[str], threshold: float, num_perm: int, n: int, hashfunc=None) -> set[int]:
    """The same run on datasketch: its MinHash LSH proposes, exact shingle Jaccard decides, keep first."""
    import datasketch

    extra = {"hashfunc": hashfunc} if hashfunc else {}
    lsh = datasketch.MinHashLSH(threshold=threshold, num_perm=num_perm, params=lsh_bands(threshold, num_perm))
    kept: dict[int, set] = {}
    dropped = set()
    for i, text in enumerate(texts):
        sh = set(shingles(text, n))
        mh = datasketch.MinHash(num_perm=num_perm, seed=1, **extra)
        mh.update_batch([s.encode("utf-8") for s in sh])
        if any(len(sh & kept[j]) / len(sh | kept[j]) >= threshold for j in lsh.query(mh)):
            dropped.add(i)
        else:
            kept[i] = sh
            lsh.insert(i, mh)
    return dropped


def _timed(fn) -> tuple[float, float, set[int]]:
    """(wall seconds, CPU seconds, result) of one call."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - t0, time.process_time() - c0, out


def bench_near(texts: list[str], threshold=0.8, num_perm=128, n=5, reps=3) -> dict:
    """Both near-dedups on the same texts (see the module docstring); runs interleaved, best of `reps` each."""
    import xxhash

    sides = {"sftpipe": lambda: near_sftpipe(texts, threshold, num_perm, n),
             "datasketch": lambda: near_datasketch(texts, threshold, num_perm, n),
             "xxh32": lambda: near_datasketch(texts, threshold, num_perm, n, xxhash.xxh32_intdigest)}
    runs: dict[str, list] = {name: [] for name in sides}
    for _ in range(reps):
        for name, fn in sides.items():
            runs[name].append(_timed(fn))
    (t_ours, c_ours, ours), (t_ds, c_ds, theirs), (t_xx, c_xx, theirs_xx) = (
        min(runs[name], key=lambda r: r[0]) for name in sides)
    agree = sum((i in ours) == (i in theirs) for i in range(len(texts))) / len(texts)
    agree_xx = sum((i in ours) == (i in theirs_xx) for i in range(len(texts))) / len(texts)
    return {"docs": len(texts), "threshold": threshold, "num_perm": num_perm, "shingle": n,
            "bands_rows": list(lsh_bands(threshold, num_perm)), "reps": reps,
            "sftpipe_docs_per_s": round(len(texts) / t_ours, 1),
            "datasketch_docs_per_s": round(len(texts) / t_ds, 1), "speed_ratio": round(t_ds / t_ours, 2),
            "cpu_seconds": {"sftpipe": round(c_ours, 3), "datasketch": round(c_ds, 3),
                            "datasketch_xxh32": round(c_xx, 3)},
            "speed_ratio_cpu": round(c_ds / c_ours, 2), "speed_ratio_xxh32_cpu": round(c_xx / c_ours, 2),
            "dropped_sftpipe": len(ours), "dropped_datasketch": len(theirs), "drop_agreement": round(agree, 5),
            "datasketch_xxh32_docs_per_s": round(len(texts) / t_xx, 1), "speed_ratio_xxh32": round(t_xx / t_ours, 2),
            "drop_agreement_xxh32": round(agree_xx, 5)}


def bench_pii_manifest(export: Path, manifest: Path) -> dict:
    """Recall over the generator's labelled values; precision over all spans found in the same messages."""
    recs = {json.loads(line)["id"]: json.loads(line) for line in export.read_text(encoding="utf-8").splitlines()}
    hit = total = good = spans_n = 0
    for line in manifest.read_text(encoding="utf-8").splitlines():
        m = json.loads(line)
        rec = recs.get(m["id"])
        if rec is None:
            continue
        for k, msg in enumerate(rec["messages"]):
            labels = [p["value"] for p in m.get("pii", []) if p["message_index"] == k]
            spans = find_pii(msg["content"] or "")
            for v in labels:
                total += 1
                start = msg["content"].find(v)
                hit += any(s.start <= start and start + len(v) <= s.end for s in spans)
            spans_n += len(spans)
            good += sum(any(s.value in v or v in s.value for v in labels) for s in spans)
    return {"values": total, "recall": round(hit / total, 4) if total else None, "spans": spans_n,
            "precision": round(good / spans_n, 4) if spans_n else None}


def bench_pii_labelled(path: Path) -> dict:
    """Per-type recall and precision on the hand-labelled set, overall and per split."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    splits = sorted({r["split"] for r in rows})
    return {"messages": len(rows), "all": score_by_type(rows),
            "by_split": {s: score_by_type([r for r in rows if r["split"] == s]) for s in splits}}


def bench_pii_speed(export: Path, reps: int) -> dict:
    """The pii stage over every thread of an export: best of `reps` runs, CPU and wall seconds."""
    convs = read_conversations([export], on_error="skip").conversations
    stage = Pii(PiiConfig())
    stage.process(convs[0])  # loads the word lists
    runs = []
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        for conv in convs:
            stage.process(conv)
        runs.append((time.process_time() - c0, time.perf_counter() - t0))
    cpu, wall = min(runs)
    messages = sum(len(c.messages) for c in convs)
    return {"threads": len(convs), "messages": messages, "reps": reps, "cpu_seconds": round(cpu, 3),
            "wall_seconds": round(wall, 3), "messages_per_cpu_s": round(messages / cpu), "ms_per_thread": round(
                1000 * cpu / len(convs), 3)}


def bench_harbor(folder: Path, workers: int) -> dict:
    """configs/harbor-curate.yaml on the Harbor `default` export (seed 0), scored against its noise manifest.

    A labelled duplicate counts as caught when it is dropped, or when its source thread is dropped as a
    duplicate of it (input order decides which copy is kept). Clean threads that dedup drops as duplicates of
    another clean thread are content duplicates the generator did not label (its templates can produce the same
    thread twice); they are reported apart from clean threads dropped for any other reason.
    """
    gen = generate(folder / "harbor", size="default", seed=0)
    cfg = load_config(ROOT / "configs" / "harbor-curate.yaml", [
        f"curate.inputs={gen.files['export']}", f"curate.out_dir={folder / 'harbor-curated'}",
        f"curate.policy.rules={gen.files['curate_rules.yaml']}",
        f"curate.policy.json_schema={gen.files['refund_offer.schema.json']}",
        f"curate.mix.source={gen.files['general']}", f"curate.workers={workers}", "curate.progress=false"])
    t0 = time.perf_counter()
    res = run_curate_stage(cfg)
    secs = time.perf_counter() - t0
    manifest = {m["id"]: m for m in map(json.loads, gen.files["noise_manifest"].read_text().splitlines())}
    rejected = {}
    for r in map(json.loads, res.files["rejected.jsonl"].read_text(encoding="utf-8").splitlines()):
        if isinstance(r["record"], dict) and r["record"].get("id") in manifest:
            rejected[r["record"]["id"]] = (f"{r['stage']}/{r['reason']}", r["details"])
    in_place: set[str] = set()  # sources dropped as duplicates of their labelled copy
    labels: dict[str, Counter] = {}
    clean: Counter = Counter()
    for rid, m in manifest.items():
        noise = [x for x in m["noise"] if not x.startswith("pii_")]
        how = rejected.get(rid, ("kept", {}))
        if "of" in m and how[0] == "kept":
            src = rejected.get(m["of"])
            if src and src[0].startswith("dedup/") and src[1].get("duplicate_of") == rid:
                how = (f"{src[0]} (its source, in its place)", {})
                in_place.add(m["of"])
        for label in noise:
            labels.setdefault(label, Counter())[how[0]] += 1
        if not noise and rid not in in_place and how[0] != "kept":
            twin = how[0].startswith("dedup/") and not [x for x in manifest[how[1]["duplicate_of"]]["noise"]
                                                         if not x.startswith("pii_")]
            clean[f"{how[0]} (of an unlabelled twin)" if twin else how[0]] += 1
    n_clean = sum(not [x for x in m["noise"] if not x.startswith("pii_")] for m in manifest.values())
    per_label = {label: {"threads": sum(c.values()), "dropped": sum(v for k, v in c.items() if k != "kept"),
                         "share_dropped": round(1 - c["kept"] / sum(c.values()), 4),
                         "by": dict(sorted(c.items()))} for label, c in sorted(labels.items())}
    twins = sum(v for k, v in clean.items() if "twin" in k)
    return {"threads": len(manifest), "seconds": round(secs, 2), "counts": res.counts, "labels": per_label,
            "clean": {"threads": n_clean, "dropped": sum(clean.values()), "dropped_as_unlabelled_twin": twins,
                      "dropped_otherwise": sum(clean.values()) - twins, "by": dict(sorted(clean.items()))}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--only", default="near,pii,harbor,pipeline")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    only = set(args.only.split(","))
    results: dict = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "n": args.n}
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d)
        # near and pipeline need n threads; pii and harbor only the seed-0 export
        export, general, (export0, manifest0) = harbor(args.n if only & {"near", "pipeline"} else 1, folder)
        if "near" in only:
            convs = read_conversations([export], on_error="skip").conversations
            texts = [key_text(c, "conversation") for c in convs]
            results["near_dedup"] = near = bench_near(texts, reps=args.reps)
            print(f"near-dedup on {near['docs']} docs: sftpipe {near['sftpipe_docs_per_s']:.0f} docs/s, datasketch "
                  f"{near['datasketch_docs_per_s']:.0f} docs/s, ratio {near['speed_ratio']:.1f}x (target >= 10x); "
                  f"dropped {near['dropped_sftpipe']} vs {near['dropped_datasketch']}, agreement "
                  f"{near['drop_agreement']:.4f} (target >= 0.99); datasketch with xxh32 "
                  f"{near['datasketch_xxh32_docs_per_s']:.0f} docs/s, ratio {near['speed_ratio_xxh32']:.1f}x; CPU-time "
                  f"ratios {near['speed_ratio_cpu']:.1f}x / {near['speed_ratio_xxh32_cpu']:.1f}x")
        if "pii" in only:
            synth = score(make_set(3000, seed=123))
            results["pii_synthetic"] = synth
            results["pii_harbor_manifest"] = harbor_pii = bench_pii_manifest(export0, manifest0)
            print(f"PII synthetic set: recall {synth['recall']:.4f} (>= 0.98), precision {synth['precision']:.4f} "
                  f"(>= 0.95) over {synth['values']} values")
            print(f"PII Harbor manifest: recall {harbor_pii['recall']}, precision {harbor_pii['precision']} over "
                  f"{harbor_pii['values']} values")
            results["pii_labelled"] = lab = bench_pii_labelled(ROOT / "tests" / "assets" / "pii" / "labelled.jsonl")
            print(f"PII per type on the hand-labelled set ({lab['messages']} messages; targets recall >= 0.98, "
                  f"precision >= 0.95):")
            for kind, row in lab["all"].items():
                by_split = "  ".join(f"{s} {v[kind]['recall']:.3f}/{v[kind]['precision']:.3f}"
                                     for s, v in lab["by_split"].items() if kind in v)
                print(f"  {kind:8s} recall {row['recall']:.3f} ({row['found']}/{row['labelled']})  precision "
                      f"{row['precision']:.3f} ({row['correct']}/{row['detected']})   R/P by split: {by_split}")
            results["pii_speed"] = sp = bench_pii_speed(export0, args.reps)
            print(f"PII stage on the Harbor export: {sp['threads']} threads, {sp['messages']} messages in "
                  f"{sp['cpu_seconds']:.2f} CPU s = {sp['messages_per_cpu_s']} messages/s, "
                  f"{sp['ms_per_thread']:.3f} ms per thread")
        if "harbor" in only:
            results["harbor"] = hb = bench_harbor(folder, args.workers)
            print(f"Harbor default export ({hb['threads']} threads) with configs/harbor-curate.yaml:")
            for label, row in hb["labels"].items():
                print(f"  {label:24s} {row['dropped']:3d}/{row['threads']:3d} dropped  {row['by']}")
            c = hb["clean"]
            print(f"  clean threads dropped: {c['dropped']}/{c['threads']} ({c['dropped_as_unlabelled_twin']} as "
                  f"duplicates of an unlabelled twin, {c['dropped_otherwise']} otherwise)  {c['by']}")
        if "pipeline" in only:
            cfg = load_config(None, [f"curate.inputs={export}", f"curate.out_dir={folder / 'curated'}",
                                     f"curate.workers={args.workers}", "curate.progress=false",
                                     "curate.mix.enabled=true", f"curate.mix.source={general}"])
            t0 = time.perf_counter()
            res = run_curate_stage(cfg)
            secs = time.perf_counter() - t0
            results["pipeline"] = {"conversations": args.n, "seconds": round(secs, 2),
                                   "conversations_per_s": round(args.n / secs, 1), "counts": res.counts,
                                   "stage_seconds": {s["stage"]: s["seconds"] for s in res.report["stages"]},
                                   "rejected_by_reason": res.report["rejected_by_reason"]}
            print(f"whole pipeline (sftpipe curate defaults + mixing, model tokenizer): {args.n} conversations in "
                  f"{secs:.1f} s = {args.n / secs:.0f} conv/s (workers={args.workers}); kept {res.counts['kept']}, "
                  f"rejected {res.counts['rejected']}")
            print("  seconds per stage: " + ", ".join(f"{k} {v:.2f}" for k, v in
                                                       results["pipeline"]["stage_seconds"].items()))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        if only != {"near", "pii", "harbor", "pipeline"} and args.out.exists():
            results = json.loads(args.out.read_text(encoding="utf-8")) | results  # keep the sections not run
        args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
