"""The `sftpipe` command line: a thin map from verb to stage function. No logic lives here."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from .config import load_config
from .errors import ConfigError, SftpipeError

app = typer.Typer(help="sftpipe: raw chat transcripts -> curated data -> fine-tuned, evaluated, servable model.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

Config = Annotated[Optional[Path], typer.Option("--config", "-c", help="Project config (sftpipe.yaml).")]
Sets = Annotated[Optional[list[str]], typer.Option("--set", help="Override any key: --set render.max_length=1024.")]
Model = Annotated[Optional[str], typer.Option("--model", help="Embedded name, local HF folder (model.name).")]
Tokenizer = Annotated[Optional[str], typer.Option("--tokenizer", help="Tokenizer folder if not the model's.")]
TemplateOpt = Annotated[Optional[str], typer.Option("--template", help="model | built-in name | path to .jinja.")]
Inputs = Annotated[Optional[list[str]], typer.Option("--input", "-i", help="Input JSONL/Parquet (data.train).")]
MaxLen = Annotated[Optional[int], typer.Option("--max-length", help="Max tokens per example (render.max_length).")]
TrainOn = Annotated[Optional[str], typer.Option("--train-on", help="all_assistant | last_assistant.")]
OnError = Annotated[Optional[str], typer.Option("--on-error", help="fail (default) | skip: reject bad records.")]
Format = Annotated[Optional[str], typer.Option("--format", help="auto | openai | sharegpt | alpaca | prompt_completion")]


def _config(config, sets, **flags):
    return load_config(config, sets, flags=flags)


@app.command()
def render(config: Config = None, set: Sets = None, model: Model = None, tokenizer: Tokenizer = None,
           template: TemplateOpt = None, input: Inputs = None, max_length: MaxLen = None, train_on: TrainOn = None,
           on_error: OnError = None, format: Format = None,
           output: Annotated[Path, typer.Option("--output", "-o", help="Rows out (.jsonl or .parquet).")] = Path(
               "rendered.jsonl")) -> None:
    """Render conversations with the chat template into input_ids + labels, with mask and parity reports."""
    from .stages.render import run
    from .summaries import print_render

    cfg = _config(config, set, **{"model.name": model, "model.tokenizer": tokenizer, "template.name": template,
                                  "data.train": input, "render.max_length": max_length,
                                  "render.train_on": train_on, "data.on_error": on_error, "data.format": format})
    print_render(run(cfg, output))


@app.command()
def inspect(config: Config = None, set: Sets = None, model: Model = None, tokenizer: Tokenizer = None,
            template: TemplateOpt = None, input: Inputs = None, train_on: TrainOn = None, format: Format = None,
            index: Annotated[int, typer.Option("--index", "-n", help="Which record (0-based).")] = 0) -> None:
    """Print one rendered example with its trained tokens highlighted."""
    from .stages.inspect import run

    cfg = _config(config, set, **{"model.name": model, "model.tokenizer": tokenizer, "template.name": template,
                                  "data.train": input, "render.train_on": train_on, "data.format": format})
    run(cfg, index)


def main() -> None:
    """Entry point: run the app; known errors print one line (no traceback) and exit non-zero."""
    try:
        app()
    except (SftpipeError, ValueError) as err:  # ValueError: option checks in library code (value, allowed, fix)
        if os.environ.get("SFTPIPE_DEBUG"):
            raise
        typer.echo(f"error: {err}", err=True)
        sys.exit(2 if isinstance(err, (ConfigError, ValueError)) else 1)


if __name__ == "__main__":
    main()
