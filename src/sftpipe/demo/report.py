"""The demo's one page for a practitioner: base, SFT and DPO side by side in OUT/report.html.

It reads what `sftpipe demo` left under its output folder: summary.json's headline numbers (passed in), the two eval
folders (runs/harbor/eval: base vs SFT, runs/harbor-dpo/eval: base vs DPO; metrics.json and generations/) and the
two runs' logged training steps (run.json `metrics`). The page is self-contained: inline CSS, inline SVG charts, no
script, every model output escaped (jinja2 autoescape). A demo without its DPO part renders with base and SFT only.
"""

from __future__ import annotations

import hashlib
import json
import math
from importlib import resources
from pathlib import Path
from typing import Any

from ..stats import wilson_interval
from ..io import atomic_write_text
from ..runs import is_run, read_info
from .summary import BARS, DPO_BARS, DPO_KEYS

SAMPLES_PER_CATEGORY = 2
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd")
W, H, LEFT, RIGHT, TOP, BOTTOM = 560, 250, 62, 14, 30, 42  # chart size and margins (px)


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _generations(folder: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """(set, id) -> generations row, over one model's eval/generations/<label>/ (IFEval left out: no checks)."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(folder.glob("*.jsonl")):
        if path.stem != "ifeval":
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    row = json.loads(line)
                    rows[(path.stem, str(row.get("id")))] = row
    return rows


def _models(out_dir: Path, summary: dict[str, Any]) -> list[dict[str, Any]]:
    """base and SFT from the SFT run's eval, DPO (when its eval exists) from the DPO run's eval."""
    sft_run = out_dir / summary.get("run_dir", "runs/harbor")
    dpo_run = out_dir / ((summary.get("dpo") or {}).get("run_dir") or "runs/harbor-dpo")
    out = []
    for label, run, role in (("base", sft_run, "baseline"), ("SFT", sft_run, "final"), ("DPO", dpo_run, "final")):
        metrics = _read_json(run / "eval" / "metrics.json")
        if metrics is None and label == "DPO":
            continue
        if metrics is None:
            raise FileNotFoundError(f"{run / 'eval' / 'metrics.json'}: the demo's base vs SFT eval is missing")
        out.append({"label": label, "run": run, "m": metrics["models"].get(role, {}),
                    "rows": _generations(run / "eval" / "generations" / role)})
    return out


def _rate(k: int, n: int) -> dict[str, Any] | None:
    lo, hi = wilson_interval(k, n)
    return {"k": k, "n": n, "rate": k / n, "ci95": [lo, hi]} if n else None


def _pool(model: dict[str, Any], *path: str) -> dict[str, list[int]]:
    """name -> [k, n] summed over the eval sets, for a {name: {k, n}} node of each set's metrics."""
    acc: dict[str, list[int]] = {}
    for metrics in model["m"].get("sets", {}).values():
        node: Any = metrics
        for key in path:
            node = node.get(key, {}) if isinstance(node, dict) else {}
        for name, r in node.items():
            a = acc.setdefault(name, [0, 0])
            a[0], a[1] = a[0] + (r.get("k") or 0), a[1] + (r.get("n") or 0)
    return acc


def _loss_per_category(model: dict[str, Any]) -> dict[str, float]:
    """Held-out loss per category, token-weighted over the sets that measured loss."""
    acc: dict[str, list[float]] = {}
    for metrics in model["m"].get("sets", {}).values():
        for cat, e in ((metrics.get("loss") or {}).get("per_category") or {}).items():
            if e.get("tokens") and math.isfinite(e.get("loss", math.nan)):
                a = acc.setdefault(cat, [0.0, 0])
                a[0], a[1] = a[0] + e["loss"] * e["tokens"], a[1] + e["tokens"]
    return {cat: nll / tokens for cat, (nll, tokens) in acc.items()}


def per_category(models: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per category: violation rate (95% CI), schema validity and held-out loss for each model."""
    viol = [_pool(m, "checks", "policy", "per_category") for m in models]
    loss = [_loss_per_category(m) for m in models]
    schema = []
    for m in models:
        acc: dict[str, list[int]] = {}
        for row in m["rows"].values():
            if row.get("schema_valid") is not None:
                a = acc.setdefault(row.get("category") or "-", [0, 0])
                a[0], a[1] = a[0] + bool(row["schema_valid"]), a[1] + 1
        schema.append(acc)
    cats = sorted({c for d in [*viol, *loss, *schema] for c in d})
    return [{"category": c, "violation": [_rate(*v[c]) if c in v else None for v in viol],
             "schema": [_rate(*s[c]) if c in s else None for s in schema], "loss": [x.get(c) for x in loss]}
            for c in cats]


def per_rule(models: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per policy rule: k/n and rate for each model, pooled over the sets."""
    pooled = [_pool(m, "checks", "policy", "per_rule") for m in models]
    return [{"rule": r, "rates": [_rate(*p[r]) if r in p else None for p in pooled]}
            for r in sorted({r for p in pooled for r in p})]


def samples(models: list[dict[str, Any]], per_category: int = SAMPLES_PER_CATEGORY) -> list[dict[str, Any]]:
    """`per_category` prompts per category that every model answered, picked by a hash of (set, id) so the
    choice is stable and spread over the sets; each with the prompt's last user message and every model's row."""
    keys = set.intersection(*(set(m["rows"]) for m in models)) if models else set()
    by_cat: dict[str, list[tuple[str, str]]] = {}
    for key in sorted(keys, key=lambda k: hashlib.sha256(f"{k[0]}/{k[1]}".encode()).hexdigest()):
        by_cat.setdefault(models[0]["rows"][key].get("category") or "-", []).append(key)
    out = []
    for cat in sorted(by_cat):
        for key in by_cat[cat][:per_category]:
            first = models[0]["rows"][key]
            user = [m.get("content") for m in first.get("prompt") or [] if m.get("role") == "user"]
            out.append({"category": cat, "set": key[0], "id": key[1], "user": user[-1] if user else "",
                        "reference": first.get("reference"), "rows": [m["rows"][key] for m in models]})
    return out


def _ticks(lo: float, hi: float, n: int = 5) -> tuple[list[float], int]:
    """About `n` round tick values covering [lo, hi], and the decimals their labels need."""
    raw = (hi - lo) / max(n - 1, 1)
    step = 10 ** math.floor(math.log10(raw))
    step *= next(f for f in (1, 2, 2.5, 5, 10) if step * f >= raw)
    first = math.floor(lo / step) * step
    ticks = [first + i * step for i in range(int(math.ceil((hi - first) / step - 1e-9)) + 1)]
    return ticks, max(0, -math.floor(math.log10(step)) + (1 if step / 10 ** math.floor(math.log10(step)) == 2.5
                                                         else 0))


def chart(title: str, ylabel: str, series: dict[str, list[tuple[float, float]]]) -> dict[str, Any] | None:
    """An SVG line chart's geometry (axes, ticks, one polyline per series); None when nothing was logged."""
    series = {k: [(x, y) for x, y in v if y is not None and math.isfinite(y)] for k, v in series.items()}
    series = {k: v for k, v in series.items() if v}
    if not series:
        return None
    xs, ys = [x for v in series.values() for x, _ in v], [y for v in series.values() for _, y in v]
    x_lo, x_hi = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    pad = (max(ys) - min(ys)) * 0.05 or abs(max(ys)) * 0.05 or 1.0
    yt, yd = _ticks(min(ys) - pad, max(ys) + pad)
    xt, _ = _ticks(x_lo, x_hi, 6)
    xt = [t for t in xt if x_lo <= t <= x_hi and float(t).is_integer()] or [x_lo, x_hi]
    y_lo, y_hi = yt[0], yt[-1]
    px = lambda x: LEFT + (x - x_lo) / (x_hi - x_lo) * (W - LEFT - RIGHT)
    py = lambda y: TOP + (y_hi - y) / ((y_hi - y_lo) or 1) * (H - TOP - BOTTOM)
    lines = [{"name": name, "color": COLORS[i % len(COLORS)], "points": " ".join(f"{px(x):.1f},{py(y):.1f}"
                                                                                for x, y in pts),
              "dots": [(round(px(x), 1), round(py(y), 1)) for x, y in pts] if len(pts) <= 60 else []}
             for i, (name, pts) in enumerate(series.items())]
    return {"title": title, "ylabel": ylabel, "w": W, "h": H, "left": LEFT, "right": W - RIGHT, "top": TOP,
            "bottom": H - BOTTOM, "lines": lines, "xticks": [(round(px(t), 1), f"{t:g}") for t in xt],
            "yticks": [(round(py(t), 1), f"{t:.{yd}f}") for t in yt]}


def curves(run_dir: Path, kind: str) -> list[dict[str, Any]]:
    """Loss (train and eval) per step from a run's logged steps, and for DPO the reward margin."""
    if not is_run(run_dir):
        return []
    log = read_info(run_dir).metrics
    pick = lambda key: [(m["step"], m[key]) for m in log if key in m and "step" in m]
    out = [chart(f"{kind} loss", "loss", {"train loss": pick("loss"), "eval loss": pick("eval_loss")})]
    if kind == "DPO":
        out.append(chart("DPO reward margin (chosen - rejected)", "reward margin",
                         {"train": pick("rewards/margins"), "eval": pick("eval_rewards/margins")}))
    return [c for c in out if c]


def headline_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """summary.json's headline metrics: base, SFT, DPO, the SFT bar (vs base) and the DPO bar (vs SFT)."""
    dpo = summary.get("dpo") or {}
    table = dpo.get("table") or {}
    sft_targets = summary.get("targets") or {k: v[0] for k, v in BARS.items()}
    dpo_targets = dpo.get("targets") or ({k: v[0] for k, v in DPO_BARS.items()} if table else {})
    keys = [*summary.get("sft", {}), *(k for k in DPO_KEYS if k not in summary.get("sft", {}) and table)]
    value = lambda role, key: (summary.get(role) or {}).get(key, (table.get(role) or {}).get(key))
    return [{"metric": k, "values": [value("base", k), value("sft", k), (table.get("dpo") or {}).get(k)],
             "sft_target": sft_targets.get(k), "sft_met": (summary.get("met") or {}).get(k),
             "dpo_target": dpo_targets.get(k), "dpo_met": (dpo.get("met") or {}).get(k)} for k in keys]


def _num(x: Any, digits: int = 3) -> str:
    return "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{digits}f}"


def write_demo_report(out_dir: Path, summary: dict[str, Any] | None = None) -> Path:
    """Write out_dir/report.html (atomically) from the demo's output folder; returns its path. `summary` is
    summary.json's content (read from out_dir when not given)."""
    import jinja2

    out_dir = Path(out_dir)
    summary = summary if summary is not None else json.loads((out_dir / "summary.json").read_text(encoding="utf-8"))
    models = _models(out_dir, summary)
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(num=_num, pct=lambda x: "–" if x is None else f"{100 * x:.1f}%")
    source = resources.files(__package__).joinpath("templates", "report.html.jinja").read_text(encoding="utf-8")
    sft_run = models[0]["run"]
    charts = [*curves(sft_run, "SFT"), *(curves(models[2]["run"], "DPO") if len(models) > 2 else [])]
    html = env.from_string(source).render(
        summary=summary, labels=[m["label"] for m in models], headline=headline_rows(summary),
        has_dpo=len(models) > 2, seconds=summary.get("seconds") or {}, charts=charts,
        seen=summary.get("examples_seen") or {}, categories=per_category(models),
        rules=per_rule(models), samples=samples(models),
        reports=[(m["label"], (m["run"] / "eval" / "report.html").relative_to(out_dir)) for m in models[1:]
                 if (m["run"] / "eval" / "report.html").is_file() and m["run"].is_relative_to(out_dir)])
    path = out_dir / "report.html"
    atomic_write_text(path, html)
    return path
