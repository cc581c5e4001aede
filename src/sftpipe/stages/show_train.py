"""Training progress for the Trainer (a `TrainerCallback`, so this part of `show` imports transformers; the rest
of `show` stays light for the verbs that never train)."""

from __future__ import annotations

import sys
import time
from datetime import timedelta
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from transformers import TrainerCallback

from .show import err_console


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


def _clock(seconds: float) -> str:
    return str(timedelta(seconds=round(seconds)))


def _timing(t0: float, step0: int, step: int, total: int, now: float | None = None) -> str:
    """Elapsed time since `t0` (at step `step0`) and the time left at this session's pace.

    >>> _timing(0.0, 0, 10, 40, now=60.0)
    'elapsed 0:01:00, eta 0:03:00'
    >>> _timing(0.0, 5, 5, 40, now=1.0)
    'elapsed 0:00:01, eta -'
    """
    elapsed = (time.monotonic() if now is None else now) - t0
    done = step - step0
    eta = _clock(elapsed / done * (total - step)) if done > 0 else "-"
    return f"elapsed {_clock(elapsed)}, eta {eta}"


class TrainProgress(TrainerCallback):
    """Training progress on the main process: a rich bar (step, loss, lr, tokens/s, ETA) on a terminal, one plain
    line per logging step when output is not a terminal; eval results as lines either way."""

    def __init__(self, console: Console | None = None, label: str = "train"):
        self.console = console or err_console
        self.label = label
        self.progress: Progress | None = None
        self.task = None
        self.started = (time.monotonic(), 0)

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = (time.monotonic(), state.global_step)  # this session's start (a resume starts mid-run)
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
            print(f"[{self.label}] step {state.global_step}/{state.max_steps}  {_fmt(logs)}  "
                  f"{_timing(*self.started, state.global_step, state.max_steps)}", file=sys.stderr, flush=True)

    def on_train_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step)
            self.progress.stop()
            self.progress = None
