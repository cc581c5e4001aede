"""Presentation for every stage: rich tables and progress on a terminal, one plain line per step otherwise.

The library below `stages/` never touches the console; it takes callbacks (`Tracker`, Trainer callbacks) and
returns results, which this module shows.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)
from rich.table import Table
from transformers import TrainerCallback

from ..evaluate.report import pct
from ..runs import loss_name

console = Console()
err_console = Console(stderr=True)


def key_value_table(title: str, rows: list[tuple[str, object]]) -> Table:
    """A two-column table of (what, value) rows."""
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value")
    for key, value in rows:
        table.add_row(key, str(value))
    return table


def tracker() -> Callable[[str, int], Callable[[int], None]]:
    """A `sftpipe.dataset.Tracker`: a transient rich bar per label on a terminal, nothing otherwise."""
    def start(label: str, total: int) -> Callable[[int], None]:
        if not err_console.is_terminal:
            return lambda n: None
        bar = Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), console=err_console,
                       transient=True)
        task = bar.add_task(label, total=total)
        bar.start()
        done = [0]

        def advance(n: int) -> None:
            done[0] += n
            bar.advance(task, n)
            if done[0] >= total:
                bar.stop()
        return advance
    return start


@contextmanager
def counting(label: str, total: int) -> Iterator[Callable[[int], None]]:
    """A progress callback for `with` blocks (eval generation, curate stages)."""
    advance = tracker()(label, total)
    yield advance


def _fmt(logs: dict[str, Any]) -> str:
    parts = []
    if "loss" in logs:
        parts.append(f"loss {logs['loss']:.4f}")
    if "learning_rate" in logs:
        parts.append(f"lr {logs['learning_rate']:.2e}")
    if "tokens_per_second" in logs:
        parts.append(f"{logs['tokens_per_second']:.0f} tok/s")
    for key in ("rewards/margins", "rewards/accuracies"):
        if key in logs:
            parts.append(f"{key.split('/')[1]} {logs[key]:.3f}")
    return "  ".join(parts)


class TrainProgress(TrainerCallback):
    """Training progress on the main process: a rich bar (step, loss, lr, tokens/s, ETA) on a terminal, one plain
    line per logging step when output is not a terminal; eval results as lines either way."""

    def __init__(self, console: Console | None = None, label: str = "train"):
        self.console = console or err_console
        self.label = label
        self.progress: Progress | None = None
        self.task = None

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero or not self.console.is_terminal:
            return
        self.progress = Progress(TextColumn(f"[bold]{self.label}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("eta"),
                                 TimeRemainingColumn(), console=self.console, transient=False)
        self.progress.start()
        self.task = self.progress.add_task(self.label, total=state.max_steps, completed=state.global_step, info="")

    def on_step_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        if "eval_loss" in logs:
            line = (f"step {state.global_step}: eval_loss {logs['eval_loss']:.4f} "
                    f"({logs.get('eval_trained_tokens', 0)} trained tokens)")
            (self.progress.console if self.progress else self.console).print(line, highlight=False)
        elif self.progress is not None:
            self.progress.update(self.task, info=_fmt(logs))
        elif "loss" in logs:
            print(f"[{self.label}] step {state.global_step}/{state.max_steps}  {_fmt(logs)}", file=sys.stderr,
                  flush=True)

    def on_train_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step)
            self.progress.stop()
            self.progress = None


def train_start(info, tcfg) -> None:
    """The line that says what is about to train, where, and how big a step is."""
    eb = info.effective_batch
    print(f"[train] {info.mode} on {info.device} ({info.precision}, {info.batching} batches, {info.world_size} "
          f"process(es)): effective batch {eb['sequences']} sequences / ~{eb['tokens']:.0f} tokens per step "
          f"(batch_size {tcfg.batch_size} x grad_accum {tcfg.grad_accum} x {info.world_size})", flush=True)


def print_train(result) -> None:
    """A short table of what a training run did (main process only under torchrun)."""
    if result.world_size > 1 and os.environ.get("RANK", "0") != "0":
        return
    eb = result.effective_batch
    console.print(key_value_table(f"train {result.run_dir}", [
        ("mode / precision / batching / processes",
         f"{result.mode} / {result.precision} / {result.batching} / {result.world_size}"),
        ("steps", result.steps), ("effective batch", f"{eb['sequences']} sequences, {eb['tokens']:.0f} tokens"),
        ("final train loss", result.final_loss), ("best eval loss", result.best_eval_loss),
        ("best checkpoint", result.best_checkpoint), ("tokens seen", result.tokens_seen),
        ("tokens/s", result.tokens_per_second), ("seconds", result.seconds),
        *([("resumed from", result.resumed_from)] if result.resumed_from else [])]))


def dpo_start(info, dcfg) -> None:
    """The line that says what the preference pass is about to train, and against which reference."""
    ref = info.reference or {}
    print(f"[dpo] {info.mode} on {info.device} ({info.precision}): {info.data['train']['pairs']} pairs, beta "
          f"{dcfg.beta}, loss {loss_name(dcfg.model_dump())}, lr {info.learning_rate:g}, {dcfg.batch_size} pairs x "
          f"grad_accum {dcfg.grad_accum} per step; reference {ref.get('name')} {ref.get('checkpoint') or '(final)'} "
          f"sha256 {str(ref.get('sha256'))[:12]}", flush=True)


def print_dpo(result) -> None:
    """A short table of what a DPO run did."""
    m = result.metrics
    console.print(key_value_table(f"dpo {result.run_dir}", [
        ("reference", f"{result.reference.get('run')} {result.reference.get('checkpoint') or ''}".strip()),
        ("pairs (rejected)", f"{result.pairs} ({result.rejected})"), ("steps", result.steps),
        ("final loss", result.final_loss), ("reward margin", m.get("rewards/margins")),
        ("reward accuracy", m.get("rewards/accuracies")), ("pairs/s", result.pairs_per_second),
        ("seconds", result.seconds), *([("resumed from", result.resumed_from)] if result.resumed_from else [])]))


def print_render(result) -> None:
    """Summarise a render run: counts, trained share, end-of-turn coverage, packing and parity."""
    m, p = result.mask, result.parity
    packed, padded = result.packing["packed"], result.packing["padded"]
    console.print(key_value_table("render", [
        ("records in / rendered / rejected", f"{result.records_in} / {m.conversations_kept} / {result.rejected}"),
        ("examples / tokens", f"{m.examples} / {m.tokens}"),
        ("trained share", f"{m.trained_share:.1%}"),
        ("end-of-turn coverage", f"{m.eot_coverage:.1%}"),
        ("truncated / history-rewrite splits", f"{m.truncated} / {m.history_rewrite_splits}"),
        ("packing efficiency (packed / padded)", f"{packed['efficiency']:.1%} / {padded['efficiency']:.1%}"),
        ("parity (checked, text / token mismatches)",
         f"{p['examples_checked']}, {p['text_mismatches']} / {p['token_mismatches']}"),
        ("rows", result.output), ("mask report", result.report_path), ("parity", result.parity_path),
        *([("rejects", result.rejects_path)] if result.rejects_path else []),
    ]))


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


def print_curate(result, out: Console | None = None) -> None:
    """Print `curate_tables`."""
    for table in curate_tables(result):
        (out or console).print(table)


def print_eval(result) -> None:
    """Terminal summary of an eval run: one row per candidate, plus the selection."""
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
    console.print(table)
    if m.get("selection"):
        console.print(f"selected: {m['selection']['best']} ({m['selection']['reason']})")
    console.print(f"report: {result.report_path}\nmetrics: {result.metrics_path}")


def print_merge(res) -> None:
    """One line: what was merged into what."""
    print(f"merged {res.run_dir}{' ' + res.checkpoint if res.checkpoint else ''} into {res.base_model}: "
          f"{res.parameters:,} parameters -> {res.output}")


def log(prefix: str) -> Callable[[str], None]:
    """A stage log function: `[prefix] message` lines on stderr."""
    return lambda msg: print(f"[{prefix}] {msg}", file=sys.stderr, flush=True)


def print_generated(result) -> None:
    """The files the demo generator wrote, with their line counts."""
    print("\n".join(f"{path}  ({result.counts.get(key, '')} lines)" for key, path in result.files.items()))


VERDICT_STYLE = {"PASS": "green", "WARN": "yellow", "FAIL": "bold red", "SKIP": "dim"}


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


def print_doctor(result, out: Console | None = None) -> None:
    """Print `doctor_table`."""
    (out or console).print(doctor_table(result))


def print_review_init(result) -> None:
    """`sftpipe review init`: the session written and its items per category."""
    console.print(key_value_table(f"review session {result.session}", [
        ("runs (never shown to reviewers)", " vs ".join(result.runs)), ("items", result.items),
        ("swapped repeats", result.repeats),
        ("per category", ", ".join(f"{k or '-'}: {v}" for k, v in result.categories.items()))]))
    console.print(f"next: sftpipe review add-reviewer {result.session} NAME; sftpipe review serve {result.session}")


def print_review_export(result) -> None:
    """`sftpipe review export`: the files written and their row counts."""
    for label, entry in (("DPO pairs", result.pairs), ("rubric scores", result.rubric)):
        if entry:
            console.print(f"{label}: {entry[1]} rows -> {entry[0]}")


def print_review_stats(s: dict) -> None:
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
    console.print(key_value_table("review stats", rows))
