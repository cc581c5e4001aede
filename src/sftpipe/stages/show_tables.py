"""The rich tables (and highlighted text) that `show` prints: built from a stage's Result, printed by nobody here."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.table import Table
from rich.text import Text

from ..demo.summary import REPORTED, dpo_bars, dpo_verdicts, targets, verdicts
from ..evaluate.report import pct
from ..labels import label_runs

if TYPE_CHECKING:
    from ..render import Example

OPEN, CLOSE = "⟦", "⟧"  # marks trained spans where colour cannot (output piped to a file or a pager)
VERDICT_STYLE = {"PASS": "green", "WARN": "yellow", "FAIL": "bold red", "SKIP": "dim"}


def key_value_table(title: str, rows: list[tuple[str, object]]) -> Table:
    """A two-column table of (what, value) rows."""
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value")
    for key, value in rows:
        table.add_row(key, str(value))
    return table


def highlight(example: Example, tokenizer, *, marks: bool = False) -> Text:
    """The example's text, token by token: trained tokens on green, the rest dim; with `marks`, each trained span
    also sits between ⟦ and ⟧ so it shows without colour."""
    out = Text()
    for start, end, trained in label_runs(example.labels):
        if marks and trained:
            out.append(OPEN)
        for tok_id in example.input_ids[start:end]:
            out.append(tokenizer.decode([tok_id], skip_special_tokens=False),
                       style="black on green" if trained else "dim")
        if marks and trained:
            out.append(CLOSE)
    return out


def curate_tables(result) -> list[Table]:
    """Rich tables: records in/out and drops per stage and reason, then each output with its content hash."""
    stages = Table(title=f"curate: {result.counts['in']} in, {result.counts['kept']} kept, "
                         f"{result.counts['rejected']} rejected", title_justify="left")
    for col, justify in (("stage", "left"), ("in", "right"), ("out", "right"), ("dropped (reason: count)", "left"),
                         ("seconds", "right")):
        stages.add_column(col, justify=justify)
    for s in result.report["stages"]:
        reasons = ", ".join(f"{r}: {n}" for r, n in sorted(s["dropped"].items())) or "-"
        stages.add_row(s["stage"], str(s["in"]), str(s["out"]), reasons, f"{s['seconds']:.2f}")
    files = Table(title=f"outputs in {result.out_dir}", title_justify="left")
    files.add_column("file")
    files.add_column("records", justify="right")
    files.add_column("sha256 (content hash)", overflow="fold")
    for name, digest in result.hashes.items():
        split = name.removesuffix(".jsonl")
        n = result.counts.get(split, result.counts["rejected"] if split == "rejected" else "")
        files.add_row(name, str(n), digest)
    files.add_row("report.json", "", "(counts per stage and reason, timings, hash definition)")
    return [stages, files]


def eval_table(result) -> Table:
    """An eval run: one row per candidate (score, judge win rate with CI, the checks' rates, the IFEval change)."""
    m = result.metrics
    table = Table(title=f"eval vs {m['baseline']['ref']}", title_justify="left")
    for col in ("model", "score", "win rate [95% CI]", "LC win", "schema", "policy clean", "correct", "IFEval Δ"):
        table.add_column(col)
    for label, c in m["comparisons"].items():
        j, comp = c.get("judge") or {}, c["components"]
        table.add_row(label, str(c["score"]["score"]),
                      f"{pct(j['win_rate'])} [{pct(j['ci95'][0])}, {pct(j['ci95'][1])}]" if j.get("n") else "–",
                      pct(j.get("length_controlled_win_rate")), pct(comp.get("schema_validity")),
                      pct(comp.get("policy")), pct(comp.get("correctness")),
                      str(c["deltas"].get("ifeval_prompt_level_strict", "–")))
    return table


def doctor_table(result) -> Table:
    """`sftpipe doctor`: one row per check with its verdict, the evidence (or why it was skipped) and the fix."""
    c = result.counts
    table = Table(title=f"doctor: {c['PASS']} pass, {c['WARN']} warn, {c['FAIL']} fail, {c['SKIP']} skip "
                        f"({result.config}{', run ' + str(result.run_dir) if result.run_dir else ''})",
                  title_justify="left", show_lines=True)
    table.add_column("check", style="bold", no_wrap=True)
    table.add_column("verdict", no_wrap=True)
    table.add_column("evidence", overflow="fold", ratio=3)
    table.add_column("fix", overflow="fold", ratio=2)
    for f in result.findings:
        table.add_row(f.check, f"[{VERDICT_STYLE[f.verdict]}]{f.verdict}[/]", f.evidence, f.fix or "-")
    return table


def demo_summary_table(summary: dict[str, Any]) -> Table:
    """Base vs SFT, one row per headline metric (shape-rule rate and decision rules included), with its target
    and whether this run met it."""
    table = Table(title="Harbor demo: base vs SFT (held-out prompts)", title_justify="left")
    for col in ("metric", "base", "SFT", "change", "target", "met"):
        table.add_column(col, justify="left" if col in ("metric", "target") else "right")
    met, goal = verdicts(summary), targets(summary)
    fmt = (lambda v: "-" if v is None else f"{v:.3f}")
    for key in summary.get("sft", {}):
        b, r = summary["base"].get(key), summary["sft"].get(key)
        change = "-" if b is None or r is None else f"{r - b:+.3f}"
        verdict = {True: "yes", False: "NO", None: "-"}[met.get(key)]
        table.add_row(key, fmt(b), fmt(r), change, goal.get(key, "delta reported"), verdict)
    return table


def demo_dpo_table(table: dict[str, dict[str, Any]], baselines: dict[str, float | None] | None = None) -> Table:
    """Base, SFT and DPO side by side, with the DPO bars (against SFT; decision rules against their majority
    baseline on the DPO model's items, `baselines`) and whether this run met them."""
    out = Table(title="Harbor demo: base vs SFT vs DPO (held-out prompts)", title_justify="left")
    for col in ("metric", "base", "SFT", "DPO", "DPO - SFT", "target", "met"):
        out.add_column(col, justify="left" if col in ("metric", "target") else "right")
    met, goal = dpo_verdicts(table, baselines), dpo_bars(baselines)
    fmt = (lambda v: "-" if v is None else f"{v:.3f}")
    for key in table["dpo"]:
        s, d = table["sft"].get(key), table["dpo"].get(key)
        out.add_row(key, fmt(table["base"].get(key)), fmt(s), fmt(d), "-" if s is None or d is None else
                    f"{d - s:+.3f}", goal.get(key, (REPORTED.get(key, "-"),))[0],
                    {True: "yes", False: "NO", None: "-"}[met.get(key)])
    return out


def review_stats_table(s: dict[str, Any]) -> Table:
    """`sftpipe review stats`: win rate with CI, verdicts, rubric means per run, agreement, consistency."""
    a, b = s["runs"]
    rows: list[tuple[str, object]] = [("items answered", f"{s['items_answered']} of {s['items']} "
                                                         f"({s['answers']} answers, {s['skips']} skips)"),
                                      ("verdicts", ", ".join(f"{k}: {v}" for k, v in s["verdicts"].items()))]
    if "win_rate" in s:
        w = s["win_rate"]
        rows.append((f"win rate of {a} vs {b}", f"{w['rate']:.3f} (95% CI {w['ci95'][0]:.3f}-{w['ci95'][1]:.3f}, "
                                                 f"{w['items']} items; ties and both-bad count 0.5)"))
    if "decisive_share" in s:
        d = s["decisive_share"]
        rows.append((f"{a} among decisive", f"{d['rate']:.3f} (Wilson 95% {d['ci95'][0]:.3f}-{d['ci95'][1]:.3f}, "
                                            f"n={d['n']})"))
    for run, fields in s["rubric"].items():
        rows.append((f"rubric {run}", ", ".join(f"{f} {v['mean']:.2f} (n={v['n']})" for f, v in fields.items())
                     or "-"))
    g = s["agreement"]
    rows.append(("reviewers", g["reviewers"]))
    if "kappa" in g:
        rows.append(("Cohen's kappa", f"{g['kappa']} over {g['kappa_items']} items"))
    rows.append(("Krippendorff's alpha (nominal)", "-" if g["alpha"] is None else g["alpha"]))
    for who, c in s["consistency"].items():
        rows.append((f"consistency {who}", f"{c['same']}/{c['n']} swapped repeats agree ({c['rate']:.2f})"))
    return key_value_table("review stats", rows)
