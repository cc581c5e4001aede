"""Curate (and render) at the size users bring: time, throughput and memory at 10k, 100k and 1M records, with the
growth exponent between sizes and the floors measured in the same run (prints ratios; asserts nothing).

Data: Harbor Support exports from the project's own generator (`build_export`, ~1.1 KB per record, with its
duplicates, PII and noise), 50,000 records per seed, ids prefixed by the seed; kept in --data-dir for reruns.
Each side runs as its own process (`sftpipe curate` / `sftpipe render`), measured as a whole process tree: wall
seconds, records/s and the peak of the summed RSS of every process in the tree (sampled every 0.1 s).

Train, per size (`--only train`, with render): a 2-process `sftpipe train` (torchrun, gloo, one step) on the
dataset the render side built (bench/train_ready.py): when each rank's data is ready, and which ranks rendered.

Agreement, per size (`--only agreement`): curate's near-dedup (each LSH bucket offers a text at most BUCKET_CAP
earlier texts) against the search it replaced (every earlier text of the bucket), on the same dedup keys.

Rows are merged by size into --out, so sizes can be measured in separate runs (the exponents are recomputed).

Floors, per size, on the same records:
- json: `json.loads` of every line in one process (records/s), times the cores (a perfectly parallel parse);
- tokenizer: the fast tokenizer alone on the rendered texts, batched (texts/s), as render's floor.

    .venv/bin/python bench/scale_bench.py [--sizes 10000,100000] [--ray] [--only curate,render,train,agreement]
                                          [--data-dir bench/.scale-data] [--out bench/results/scale_bench.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SFTPIPE = str(Path(sys.executable).with_name("sftpipe"))


def export(n: int, folder: Path) -> Path:
    """`n` generated Harbor threads as one JSONL file (cached)."""
    from sftpipe.demo.generate import build_export

    path = folder / f"export-{n}.jsonl"
    if path.is_file():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        done, seed = 0, 0
        while done < n:
            k = min(50_000, n - done)
            for rec in build_export(random.Random(seed), k):
                rec["id"] = f"s{seed}-{rec['id']}"
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            done, seed = done + k, seed + 1
    os.replace(tmp, path)
    return path


def _tree_rss(root: int) -> tuple[int, int]:
    """Summed RSS and anonymous RSS (bytes) of `root` and every process below it. RSS also counts the pages of
    memory-mapped files a process has touched (the tokenized dataset): the kernel can drop those, not the rest."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="utf-8") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    total, anon, todo = 0, 0, [root]
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            with open(f"/proc/{pid}/status", encoding="utf-8") as f:
                fields = {k: int(v.split()[0]) * 1024 for k, v in (line.split(":", 1) for line in f)
                          if k in ("VmRSS", "RssAnon")}
        except OSError:
            continue
        total, anon = total + fields.get("VmRSS", 0), anon + fields.get("RssAnon", 0)
    return total, anon


def measure(cmd: list[str], cwd: Path, env: dict | None = None) -> dict:
    """Run `cmd`; wall seconds, peak tree RSS (GiB), the exit code and the last line it printed."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    peak, peak_anon, done = 0, 0, threading.Event()

    def poll() -> None:
        nonlocal peak, peak_anon
        while not done.wait(0.1):
            total, anon = _tree_rss(proc.pid)
            peak, peak_anon = max(peak, total), max(peak_anon, anon)
    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    out, _ = proc.communicate()
    done.set()
    watcher.join()
    seconds = time.perf_counter() - t0
    if proc.returncode:
        print(out[-3000:], file=sys.stderr)
    return {"seconds": round(seconds, 2), "peak_rss_gib": round(peak / 2**30, 3),
            "peak_anon_rss_gib": round(peak_anon / 2**30, 3), "rc": proc.returncode,
            "last_line": out.strip().splitlines()[-1] if out.strip() else ""}


def json_floor(path: Path) -> float:
    """Records/s of json.loads alone, one process."""
    t0 = time.perf_counter()
    n = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            json.loads(line)
            n += 1
    return n / (time.perf_counter() - t0)


def curate(path: Path, n: int, work: Path, executor: str) -> dict:
    """`sftpipe curate` with the default stages on every core."""
    cfg = work / f"curate-{executor}.yaml"
    out = work / f"curated-{executor}"
    cfg.write_text(json.dumps({"curate": {"inputs": [str(path)], "out_dir": str(out), "workers": os.cpu_count(),
                                          "progress": False, "executor": {"kind": executor}}}), encoding="utf-8")
    res = measure([SFTPIPE, "curate", "-c", str(cfg)], work)
    res.pop("last_line")
    res["records_per_s"] = round(n / res["seconds"], 1)
    report = out / "report.json"
    if report.is_file():
        rep = json.loads(report.read_text())
        res["counts"] = rep["counts"]
        res["stage_seconds"] = {s["stage"]: s["seconds"] for s in rep["stages"]}
        res["manifest_sha256"] = _sha(out / "sftpipe_curate.json")
    return res


def agreement(path: Path) -> dict:
    """Near-duplicate decisions of curate's dedup (each LSH bucket offers a text at most BUCKET_CAP earlier texts)
    against the search before the cap (every earlier text of the bucket is offered), on the same dedup keys of
    the parsed records (default dedup config; normalize and PII not applied): the share of records whose fate
    (kept, exact or near duplicate) is the same, and each side's seconds."""
    from sftpipe.config.curate import DedupConfig
    from sftpipe.curate.dedup import Dedup, exact_digest
    from sftpipe.readers import ReadResult, stream_conversations

    convs = list(stream_conversations([str(path)], ReadResult(), on_error="skip"))
    cfg = DedupConfig()
    keys = [Dedup(cfg).key(c) for c in convs]
    ids, digests = list(range(len(keys))), [exact_digest(k) for k in keys]
    fates, seconds = [], []
    for cap in (None, len(keys)):
        dedup = Dedup(cfg)
        if cap is not None:
            dedup.near.cap = cap
        t0 = time.perf_counter()
        found = dedup.decide(ids, digests, dedup.near.sketch(keys), None)
        seconds.append(round(time.perf_counter() - t0, 1))
        fates.append([found[i][0] if i in found else "kept" for i in range(len(keys))])
    same = sum(a == b for a, b in zip(*fates))
    return {"records": len(keys), "agreement": round(same / len(keys), 6),
            "near_dropped": {"capped": fates[0].count("near_duplicate"), "uncapped": fates[1].count("near_duplicate")},
            "search_seconds": {"capped": seconds[0], "uncapped": seconds[1]}}


def _sha(path: Path) -> str:
    import hashlib

    data = json.loads(path.read_text())
    return hashlib.sha256(json.dumps(data.get("content_hashes"), sort_keys=True).encode()).hexdigest()[:16]


def exponent(a: dict, b: dict, key: str = "seconds") -> float | None:
    """Growth exponent of `key` between two sizes: log(y2 / y1) / log(n2 / n1)."""
    if not a.get(key) or not b.get(key):
        return None
    return round(math.log(b[key] / a[key]) / math.log(b["n"] / a["n"]), 3)


def merge(old: list[dict], new: list[dict]) -> list[dict]:
    """Rows by size: the new ones replace old rows of the same size; growth exponents recomputed in order."""
    rows = sorted({**{r["n"]: r for r in old}, **{r["n"]: r for r in new}}.values(), key=lambda r: r["n"])
    for a, b in zip(rows, rows[1:]):
        b["exponent_seconds_from_prev"] = exponent(a, b)
        b["exponent_rss_from_prev"] = exponent(a, b, "peak_rss_gib")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--ray", action="store_true", help="also run curate on a local Ray instance")
    ap.add_argument("--only", default="curate,render")
    ap.add_argument("--data-dir", type=Path, default=ROOT / "bench" / ".scale-data")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "scale_bench.json")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    only = set(args.only.split(","))
    cores = os.cpu_count() or 1
    results: dict = json.loads(args.out.read_text()) if args.out.is_file() else {}
    results["machine"] = {"cpu": platform.processor() or platform.machine(), "cores": cores,
                          "python": platform.python_version()}
    for executor in ["local"] + (["ray"] if args.ray else []):
        rows = []
        for n in sizes if "curate" in only else []:
            path = export(n, args.data_dir)
            floor = json_floor(path)
            with tempfile.TemporaryDirectory(dir=args.data_dir) as work:
                res = {"n": n, **curate(path, n, Path(work), executor),
                       "json_floor_per_s_one_core": round(floor, 1), "json_floor_per_s_all_cores": round(floor * cores)}
            res["of_json_floor"] = round(res["records_per_s"] / res["json_floor_per_s_all_cores"], 4)
            rows.append(res)
            print(f"curate[{executor}] {n:>9,}: {res['seconds']:8.1f} s  {res['records_per_s']:9.1f} rec/s  "
                  f"peak {res['peak_rss_gib']:.2f} GiB  ({res['of_json_floor']:.3f}x the json floor)", flush=True)
        if rows:
            results[f"curate_{executor}"] = merge(results.get(f"curate_{executor}", []), rows)
            for a, b in zip(results[f"curate_{executor}"], results[f"curate_{executor}"][1:]):
                print(f"curate[{executor}] {a['n']:,} -> {b['n']:,}: time exponent "
                      f"{b['exponent_seconds_from_prev']}, memory exponent {b['exponent_rss_from_prev']}")
    agreements = []
    for n in sizes if "agreement" in only else []:
        agreements.append({"n": n, **agreement(export(n, args.data_dir))})
        print(f"dedup agreement {n:>9,}: {agreements[-1]}", flush=True)
    if agreements:
        results["near_dedup_agreement"] = merge(results.get("near_dedup_agreement", []), agreements)
    rows, trains = [], []
    for n in sizes if "render" in only else []:
        path = export(n, args.data_dir)
        with tempfile.TemporaryDirectory(dir=args.data_dir) as work:
            env = {**os.environ, "SFTPIPE_TOKENIZED_CACHE": str(Path(work) / "cache")}
            res = measure([sys.executable, str(ROOT / "bench" / "render_scale.py"), str(path),
                           str(Path(work) / "out")], Path(work), env)
            inner = json.loads(res.pop("last_line")) if res["rc"] == 0 else {}
            res = {"n": n, "wall_seconds": res.pop("seconds"), **res, **inner}
            rows.append(res)
            print(f"render {n:>9,}: {res['wall_seconds']:8.1f} s (rendering {inner.get('seconds')} s, "
                  f"{inner.get('records_per_s')} rec/s = {inner.get('ratio_to_floor')}x the tokenizer floor)  "
                  f"peak {res['peak_rss_gib']:.2f} GiB", flush=True)
            if "train" in only and res["rc"] == 0:
                tr = measure([sys.executable, str(ROOT / "bench" / "train_ready.py"), str(path),
                              str(Path(work) / "train")], Path(work), env)
                tr = {"n": n, **json.loads(tr.pop("last_line") or "{}"), **tr}
                trains.append(tr)
                print(f"train  {n:>9,}: 2 ranks ready at {tr.get('ready_seconds')} s (gap "
                      f"{tr.get('ready_gap_seconds')} s), ranks that rendered {tr.get('ranks_that_rendered')}, "
                      f"peak {tr['peak_rss_gib']:.2f} GiB", flush=True)
    if rows:
        results["render"] = merge(results.get("render", []), rows)
    if trains:
        results["train_2_processes"] = merge(results.get("train_2_processes", []), trains)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
