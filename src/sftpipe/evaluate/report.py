"""Presentation of eval metrics: report.html with PNG plots next to it, the run.json summary, the model card
section, and the terminal summary."""

from __future__ import annotations

import io
import json
import time
from importlib import resources
from pathlib import Path

from ..io import atomic_write_bytes, atomic_write_text
from ..runs import card as run_card
from ..runs import read_info, write_info

CARD_START, CARD_END = "<!-- sftpipe:eval:start -->", "<!-- sftpipe:eval:end -->"
COLORS = ["#7f7f7f", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2"]


def pct(x) -> str:
    """A share as a percentage with one decimal ("–" for none)."""
    return "–" if x is None else f"{100 * x:.1f}%"


def _ci(r: dict | None) -> str:
    if not r or not r.get("n"):
        return "–"
    return f"{pct(r['rate'])} [{pct(r['ci95'][0])}, {pct(r['ci95'][1])}] (n={r['n']})"


def _png(fig, path: Path) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
    return f"plots/{path.name}"


def _bars(ax, groups: list[str], series: dict[str, list[float | None]], ylabel: str) -> None:
    """Grouped bars: one group per x label, one bar per series (missing values are left out)."""
    width = 0.8 / max(1, len(series))
    for k, (name, values) in enumerate(series.items()):
        xs = [i + k * width for i, v in enumerate(values) if v is not None]
        ax.bar(xs, [v for v in values if v is not None], width, label=name, color=COLORS[k % len(COLORS)])
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(groups))], groups, rotation=30, ha="right")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)


def make_plots(out_dir: Path, metrics: dict) -> dict[str, str]:
    """PNG plots under out_dir/plots; returns title -> relative path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots: dict[str, str] = {}
    folder = out_dir / "plots"
    models = metrics["models"]
    names = list(models)
    comps = sorted({name for m in [*models.values(), *metrics["comparisons"].values()]
                    for name in m.get("components", {})})
    if comps:
        fig, ax = plt.subplots(figsize=(8, 3.5))
        series = {n: [(metrics["comparisons"].get(n) or models[n]).get("components", {}).get(c) for c in comps]
                  for n in names}
        _bars(ax, comps, series, "score (higher is better)")
        ax.set_ylim(0, 1.05)
        plots["Score components"] = _png(fig, folder / "components.png")
        plt.close(fig)
    for set_name in metrics["sets"]:
        losses = {n: models[n]["sets"].get(set_name, {}).get("loss") for n in names}
        if not any(losses.values()):
            continue
        deciles = sorted({d for v in losses.values() if v for d in v["per_decile"]}, key=int)
        fig, ax = plt.subplots(figsize=(7, 3.2))
        _bars(ax, [f"decile {d}" for d in deciles],
              {n: [v["per_decile"].get(d, {}).get("loss") if v else None for d in deciles] for n, v in losses.items()},
              "loss (nats / assistant token)")
        plots[f"Held-out loss by frequency decile: {set_name}"] = _png(fig, folder / f"loss_decile_{set_name}.png")
        plt.close(fig)
    rules = sorted({r for m in models.values() for e in m["sets"].values() if "checks" in e
                    for r in e["checks"]["policy"]["per_rule"]})
    if rules:
        fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(rules)), 3.5))
        _bars(ax, rules, {n: [_pooled_rule(models[n], r) for r in rules] for n in names}, "violation rate")
        plots["Policy violations per rule (all sets)"] = _png(fig, folder / "policy_rules.png")
        plt.close(fig)
    judged = {k: c["judge"] for k, c in metrics["comparisons"].items() if c.get("judge", {}).get("n")}
    if judged:
        fig, ax = plt.subplots(figsize=(6, 3))
        for i, j in enumerate(judged.values()):
            ax.errorbar([i], [j["win_rate"]], yerr=[[j["win_rate"] - j["ci95"][0]], [j["ci95"][1] - j["win_rate"]]],
                        fmt="o", color=COLORS[1], capsize=4, label="win rate (95% CI)" if i == 0 else None)
            ax.plot([i + 0.15], [j["length_controlled_win_rate"]], "s", color=COLORS[2],
                    label="length-controlled" if i == 0 else None)
        ax.axhline(0.5, color="#999", lw=1, ls="--")
        ax.set_xticks(range(len(judged)), list(judged))
        ax.set_ylim(0, 1)
        ax.set_ylabel("win rate vs baseline")
        ax.legend(fontsize=8)
        plots["Judge win rate"] = _png(fig, folder / "win_rate.png")
        plt.close(fig)
    sel = metrics.get("selection")
    if sel and len(sel["scores"]) > 1:
        fig, ax = plt.subplots(figsize=(6, 3))
        ks = list(sel["scores"])
        ax.plot(range(len(ks)), [sel["scores"][k] for k in ks], "o-", color=COLORS[1])
        ax.set_xticks(range(len(ks)), ks, rotation=30, ha="right")
        ax.set_ylabel("combined score")
        plots["Combined score per checkpoint"] = _png(fig, folder / "checkpoints.png")
        plt.close(fig)
    return plots


def _pooled_rule(model: dict, rule: str) -> float | None:
    k = n = 0
    for e in model["sets"].values():
        r = e.get("checks", {}).get("policy", {}).get("per_rule", {}).get(rule)
        if r:
            k, n = k + r["k"], n + r["n"]
    return k / n if n else None


def write_report(out_dir: Path, metrics: dict) -> Path:
    """Render report.html (self-contained page; plots are PNG files in plots/, linked relatively)."""
    import jinja2

    plots = make_plots(out_dir, metrics)
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    env.filters.update(pct=pct, ci=_ci, js=lambda v: json.dumps(v))
    source = (resources.files("sftpipe.evaluate") / "data" / "report.html.jinja").read_text(encoding="utf-8")
    generations = sorted(str(p.relative_to(out_dir)) for p in (out_dir / "generations").rglob("*.jsonl")) \
        if (out_dir / "generations").exists() else []
    judges = sorted(str(p.relative_to(out_dir)) for p in (out_dir / "judge").glob("*.jsonl")) \
        if (out_dir / "judge").exists() else []
    constrained = any("schema_validity_constrained" in m for m in metrics["models"].values())
    html = env.from_string(source).render(m=metrics, plots=plots, generations=generations, judges=judges,
                                          rules=_rule_table(metrics), names=list(metrics["models"]),
                                          constrained=constrained)
    path = out_dir / "report.html"
    atomic_write_text(path, html)
    return path


def _rule_table(metrics: dict) -> list[tuple[str, list[float | None]]]:
    models = metrics["models"]
    rules = sorted({r for m in models.values() for e in m["sets"].values() if "checks" in e
                    for r in e["checks"]["policy"]["per_rule"]})
    return [(r, [_pooled_rule(m, r) for m in models.values()]) for r in rules]


def summary(metrics: dict) -> dict:
    """The short summary kept in run.json["eval"] and shown in the model card."""
    out = {"metrics": "eval/metrics.json", "report": "eval/report.html", "baseline": metrics["baseline"]["ref"],
           "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "candidates": {}}
    for label, c in metrics["comparisons"].items():
        j = c.get("judge") or {}
        constrained = metrics["models"].get(label, {}).get("schema_validity_constrained")
        out["candidates"][label] = {
            "score": c["score"]["score"], "components": c["components"],
            **({"schema_validity_constrained": constrained["rate"]} if constrained else {}),
            **({"win_rate": j["win_rate"], "win_rate_ci95": j["ci95"],
                "length_controlled_win_rate": j["length_controlled_win_rate"], "judged": j["n"]} if j.get("n") else {}),
            "deltas": c["deltas"]}
    if metrics.get("selection"):
        out["selection"] = metrics["selection"]
    return out


def update_run_json(run_dir: Path, metrics: dict) -> dict:
    """Write the summary into run.json["eval"] (and best_checkpoint with select), atomically; return it."""
    info = read_info(run_dir)
    info.eval = summary(metrics)
    if metrics.get("selection"):
        info.best_checkpoint = metrics["selection"]["best"]
    write_info(run_dir, info)
    return info.eval


def card_markdown(s: dict) -> str:
    """The model card's evaluation section (markdown) for a run.json eval summary."""
    constrained = any("schema_validity_constrained" in c for c in s["candidates"].values())
    lines = ["## Evaluation", "", f"Baseline: `{s['baseline']}`. Full report: [eval/report.html]({s['report']}), "
             f"metrics: [eval/metrics.json]({s['metrics']}).", "",
             "| model | combined score | judge win rate [95% CI] | length-controlled | schema valid | "
             + ("schema valid, constrained | " if constrained else "")
             + "policy clean | correct | IFEval Δ (prompt) | general NLL Δ |",
             "|---|---|---|---|---|" + ("---|" if constrained else "") + "---|---|---|---|"]
    for label, c in s["candidates"].items():
        comp, d = c["components"], c["deltas"]
        win = (f"{pct(c['win_rate'])} [{pct(c['win_rate_ci95'][0])}, {pct(c['win_rate_ci95'][1])}]"
               if "win_rate" in c else "–")
        lines.append(f"| {label} | {c['score'] if c['score'] is not None else '–'} | {win} | "
                     f"{pct(c.get('length_controlled_win_rate'))} | {pct(comp.get('schema_validity'))} | "
                     + (f"{pct(c.get('schema_validity_constrained'))} | " if constrained else "")
                     + f"{pct(comp.get('policy'))} | {pct(comp.get('correctness'))} | "
                     f"{d.get('ifeval_prompt_level_strict', '–')} | {d.get('general_nll', '–')} |")
    sel = s.get("selection")
    if sel:
        lines += ["", f"Selected checkpoint: **{sel['best']}**: {sel['reason']}."]
    return "\n".join(lines) + "\n"


def update_card(run_dir: Path, s: dict) -> None:
    """Add the eval summary to the model card. A card written by `sftpipe train` has an eval slot and is
    re-rendered by `sftpipe.runs.update_eval`; any other README.md gets (or has replaced) a marked section."""
    path = Path(run_dir) / "README.md"
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if run_card.EVAL_START in text:
        run_card.update_eval(Path(run_dir), s)
        return
    block = f"{CARD_START}\n{card_markdown(s)}{CARD_END}\n"
    if CARD_START in text and CARD_END in text:
        head, rest = text.split(CARD_START, 1)
        text = head + block + rest.split(CARD_END, 1)[1].lstrip("\n")
    else:
        text = (text.rstrip("\n") + "\n\n" if text else "") + block
    atomic_write_text(path, text)
