"""Presentation for every stage: rich tables and progress on a terminal, one plain line per step otherwise.

The library below `stages/` never touches the console; it takes callbacks (`Tracker`, Trainer callbacks) and
returns results, which this module shows: one `print_<verb>` per stage Result, and the progress callbacks the
stages hand the library. The tables are built in `show_tables`, the Trainer's progress bar in `show_train`.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from ..runs import loss_name
from .show_tables import (VERDICT_STYLE, curate_tables, demo_dpo_table, demo_summary_table, doctor_table, eval_table,
                          highlight, key_value_table, review_stats_table)

console = Console()
err_console = Console(stderr=True)


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


def log(prefix: str) -> Callable[[str], None]:
    """A stage log function: `[prefix] message` lines on stderr."""
    return lambda msg: print(f"[{prefix}] {msg}", file=sys.stderr, flush=True)


def train_start(info, tcfg) -> None:
    """The line that says what is about to train, where, and how big a step is."""
    eb = info.effective_batch
    print(f"[train] {info.mode} on {info.device} ({info.precision}, {info.batching} batches, {info.world_size} "
          f"process(es)): effective batch {eb['sequences']} sequences / ~{eb['tokens']:.0f} tokens per step "
          f"(batch_size {tcfg.batch_size} x grad_accum {info.segments[-1]['grad_accum']} x {info.world_size})",
          flush=True)
    _resumed_elsewhere("train", info)


def _resumed_elsewhere(stage: str, info) -> None:
    """A line when a resumed run now runs on another number of processes, saying how its batch is kept."""
    if len(info.segments) > 1 and info.segments[-2]["world_size"] != info.world_size:
        was, now = info.segments[-2], info.segments[-1]
        print(f"[{stage}] resumed at step {now['from_step']} on {now['world_size']} process(es) instead of "
              f"{was['world_size']}: grad_accum {was['grad_accum']} -> {now['grad_accum']} keeps "
              f"{was['grad_accum'] * was['world_size']} micro-batches per optimizer step", flush=True)


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
          f"grad_accum {info.segments[-1]['grad_accum']} x {info.world_size} per step; reference {ref.get('name')} "
          f"{ref.get('checkpoint') or '(final)'} sha256 {str(ref.get('sha256'))[:12]}", flush=True)
    _resumed_elsewhere("dpo", info)


def _rounded(x, digits: int = 4):
    """A metric as a reader wants it: floats to `digits` significant digits, anything else as it is.

    >>> _rounded(2.800806999206543), _rounded(None), _rounded(0.000123456)
    (2.801, None, 0.0001235)
    """
    return float(f"{x:.{digits}g}") if isinstance(x, float) else x


def print_dpo(result) -> None:
    """A short table of what a DPO run did."""
    m = result.metrics
    console.print(key_value_table(f"dpo {result.run_dir}", [
        ("reference", f"{result.reference.get('run')} {result.reference.get('checkpoint') or ''}".strip()),
        ("pairs (rejected)", f"{result.pairs} ({result.rejected})"), ("steps", result.steps),
        ("final loss", _rounded(result.final_loss)), ("reward margin", _rounded(m.get("rewards/margins"))),
        ("reward accuracy", _rounded(m.get("rewards/accuracies"))), ("pairs/s", result.pairs_per_second),
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


def print_curate(result) -> None:
    """`sftpipe curate`: records in/out and drops per stage and reason, then each output with its content hash."""
    for table in curate_tables(result):
        console.print(table)


def print_eval(result) -> None:
    """Terminal summary of an eval run: one row per candidate, plus the selection."""
    m = result.metrics
    console.print(eval_table(result))
    if m.get("selection"):
        console.print(f"selected: {m['selection']['best']} ({m['selection']['reason']})")
    console.print(f"report: {result.report_path}\nmetrics: {result.metrics_path}")


def print_merge(res) -> None:
    """One line: what was merged into what."""
    print(f"merged {res.run_dir}{' ' + res.checkpoint if res.checkpoint else ''} into {res.base_model}: "
          f"{res.parameters:,} parameters -> {res.output}")


def print_inspect(result) -> None:
    """`sftpipe inspect`: each example with its trained tokens highlighted (marked ⟦ ⟧ when not a terminal), then
    its token counts and the template."""
    for ex in result.examples:
        console.print(highlight(ex, result.tokenizer, marks=not console.is_terminal), soft_wrap=True)
        console.print(f"[bold]{len(ex.input_ids)} tokens, {ex.n_trained} trained "
                      f"({ex.n_trained / len(ex.input_ids):.0%}), end-of-turn trained for "
                      f"{ex.eot_trained}/{ex.trained_messages} replies; template {result.template.name} "
                      f"sha256 {result.template.sha256[:12]}[/bold]")


def print_export(result) -> None:
    """`sftpipe export`: one line, what was exported (the run or its checkpoint folder) as what, and where."""
    r = result.record
    source = Path(r["run_dir"]) / "checkpoints" / r["checkpoint"] if r.get("checkpoint") else r["run_dir"]
    print(f"exported {source} as {result.format} ({r['dtype']}) -> {result.output}")


DOCTOR_TABLE_WIDTH = 120  # columns: narrower consoles get the findings as blocks


def print_doctor(result, *, as_json: bool = False, strict: bool = False) -> None:
    """`sftpipe doctor`: the table of findings, or with `as_json` the findings as JSON (for CI)."""
    if as_json:
        print(json.dumps(result.to_json(strict), indent=2))
    elif console.width >= DOCTOR_TABLE_WIDTH:
        console.print(doctor_table(result))
    else:  # a table this narrow would fold config keys and paths mid-word: one block per check instead
        console.print(doctor_table(result).title, highlight=False)
        for f in result.findings:
            console.print(f"[{VERDICT_STYLE[f.verdict]}]{f.verdict:<4}[/] [bold]{f.check}[/]: {f.evidence}"
                          + (f"\n     fix: {f.fix}" if f.fix else ""), highlight=False, soft_wrap=True)


def print_generated(result) -> None:
    """The files the demo generator wrote, with their line counts."""
    print("\n".join(f"{path}  ({result.counts[key]} lines)" if key in result.counts else str(path)
                    for key, path in result.files.items()))


def step(title: str) -> None:
    """The line that opens one step of a longer stage (the demo's `3/6 train (full)`)."""
    console.rule(title)


def print_demo(result) -> None:
    """`sftpipe demo`: base vs SFT and base vs SFT vs DPO against their targets, the seconds per stage, the reports
    and the doctor table on what the demo built."""
    console.print(demo_summary_table(result.summary))
    console.print(demo_dpo_table(result.dpo["table"], result.dpo["majority"]))
    console.print("stage seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in result.seconds.items()))
    console.print(f"eval report: {result.report}")
    console.print(f"demo report (base, SFT and DPO side by side): {result.demo_report}")
    print_doctor(result.doctor)


def print_review_init(result) -> None:
    """`sftpipe review init`: the session written and its items per category."""
    console.print(key_value_table(f"review session {result.session}", [
        ("runs (never shown to reviewers)", " vs ".join(result.runs)), ("items", result.items),
        ("swapped repeats", result.repeats),
        ("left out: identical replies", result.identical),
        ("per category", ", ".join(f"{k or '-'}: {v}" for k, v in result.categories.items()))]))
    console.print(f"next: sftpipe review add-reviewer {result.session} NAME; sftpipe review serve {result.session}")


def print_review_export(result) -> None:
    """`sftpipe review export`: the files written and their row counts."""
    for label, entry in (("DPO pairs", result.pairs), ("rubric scores", result.rubric)):
        if entry:
            console.print(f"{label}: {entry[1]} rows -> {entry[0]}")


def print_review_link(link: str) -> None:
    """`sftpipe review add-reviewer`: the reviewer's personal link."""
    print(link)


def print_review_stats(s: dict, *, as_json: bool = False) -> None:
    """`sftpipe review stats`: the statistics as a table, or with `as_json` as JSON."""
    if as_json:
        print(json.dumps(s, indent=2))
    else:
        console.print(review_stats_table(s))
