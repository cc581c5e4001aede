"""Curate benchmarks on generated Harbor Support data (prints ratios; asserts nothing).

1. Near-dedup, end to end with shingling, same texts and same greedy keep-first run: sftpipe (rensa) against
   datasketch (MinHash.update_batch + MinHashLSH with the same bands/rows). Prints docs/s, the speed ratio
   (target >= 10x) and the agreement on which records are dropped (target >= 0.99).
2. PII recall and precision (targets 0.98 / 0.95) on the labelled synthetic set (sftpipe.curate.pii_synth)
   and on the Harbor generator's own noise manifest (written independently of the recognizers).
3. Whole-pipeline throughput on 20,000 conversations (default curate config plus mixing).

    .venv/bin/python bench/curate_bench.py [--n 20000] [--workers 2] [--out bench/results/curate_bench.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

from sftpipe.curate.base import key_text
from sftpipe.curate.config import CurateConfig
from sftpipe.curate.dedup import NearIndex, lsh_bands, shingles
from sftpipe.curate.pii import find_pii
from sftpipe.curate.pii_synth import make_set, score
from sftpipe.curate.pipeline import run_curate
from sftpipe.demo.generate import generate
from sftpipe.readers import read_conversations


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


def bench_near(texts: list[str], threshold=0.8, num_perm=128, n=5) -> dict:
    """Greedy keep-first near-dedup both ways; LSH proposes candidates, exact shingle Jaccard decides."""
    import datasketch

    t0 = time.perf_counter()
    hits = NearIndex(threshold, num_perm, n).add(texts, list(range(len(texts))))
    ours = {i for i, hit in enumerate(hits) if hit is not None}
    t_ours = time.perf_counter() - t0

    t0 = time.perf_counter()
    lsh = datasketch.MinHashLSH(threshold=threshold, num_perm=num_perm, params=lsh_bands(threshold, num_perm))
    kept: dict[int, set] = {}
    theirs = set()
    for i, text in enumerate(texts):
        sh = set(shingles(text, n))
        mh = datasketch.MinHash(num_perm=num_perm, seed=1)
        mh.update_batch([s.encode("utf-8") for s in sh])
        if any(len(sh & kept[j]) / len(sh | kept[j]) >= threshold for j in lsh.query(mh)):
            theirs.add(i)
        else:
            kept[i] = sh
            lsh.insert(i, mh)
    t_theirs = time.perf_counter() - t0
    agree = sum((i in ours) == (i in theirs) for i in range(len(texts))) / len(texts)
    return {"docs": len(texts), "sftpipe_docs_per_s": round(len(texts) / t_ours, 1),
            "datasketch_docs_per_s": round(len(texts) / t_theirs, 1), "speed_ratio": round(t_theirs / t_ours, 2),
            "dropped_sftpipe": len(ours), "dropped_datasketch": len(theirs), "drop_agreement": round(agree, 5)}


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    results: dict = {"machine": platform.processor() or platform.machine(), "n": args.n}
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d)
        export, general, (export0, manifest0) = harbor(args.n, folder)
        convs = read_conversations([export], on_error="skip").conversations
        texts = [key_text(c, "conversation") for c in convs]
        results["near_dedup"] = near = bench_near(texts)
        print(f"near-dedup on {near['docs']} docs: sftpipe {near['sftpipe_docs_per_s']:.0f} docs/s, datasketch "
              f"{near['datasketch_docs_per_s']:.0f} docs/s, ratio {near['speed_ratio']:.1f}x (target >= 10x); "
              f"dropped {near['dropped_sftpipe']} vs {near['dropped_datasketch']}, agreement "
              f"{near['drop_agreement']:.4f} (target >= 0.99)")

        synth = score(make_set(3000, seed=123))
        results["pii_synthetic"] = synth
        results["pii_harbor_manifest"] = harbor_pii = bench_pii_manifest(export0, manifest0)
        print(f"PII synthetic set: recall {synth['recall']:.4f} (>= 0.98), precision {synth['precision']:.4f} "
              f"(>= 0.95) over {synth['values']} values")
        print(f"PII Harbor manifest: recall {harbor_pii['recall']}, precision {harbor_pii['precision']} over "
              f"{harbor_pii['values']} values")

        cfg = CurateConfig(workers=args.workers, progress=False, mix={"enabled": True, "source": str(general)})
        t0 = time.perf_counter()
        res = run_curate([export], cfg, folder / "curated")
        secs = time.perf_counter() - t0
        results["pipeline"] = {"conversations": args.n, "seconds": round(secs, 2),
                               "conversations_per_s": round(args.n / secs, 1), "counts": res.counts,
                               "stage_seconds": {s["stage"]: s["seconds"] for s in res.report["stages"]},
                               "rejected_by_reason": res.report["rejected_by_reason"]}
        print(f"whole pipeline: {args.n} conversations in {secs:.1f} s = {args.n / secs:.0f} conv/s "
              f"(workers={args.workers}); kept {res.counts['kept']}, rejected {res.counts['rejected']}")
        print("  seconds per stage: " + ", ".join(f"{k} {v:.2f}" for k, v in
                                                   results["pipeline"]["stage_seconds"].items()))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
