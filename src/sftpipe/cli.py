"""The `sftpipe` command line: a thin map from verb to stage function. No logic lives here."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from .errors import ConfigError, SftpipeError
from .export.formats import formats_help

# sftpipe shows its own progress (rich); transformers' per-load tqdm bars would interleave with it. =0 restores them.
# Every verb imports its stage (and so transformers) inside its function, after this line; `--help` imports neither.
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

app = typer.Typer(help="sftpipe: raw chat transcripts -> curated data -> fine-tuned, evaluated, servable model.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

Config = Annotated[Path | None, typer.Option("--config", "-c", help="Project config (sftpipe.yaml).")]
Sets = Annotated[list[str] | None, typer.Option("--set", help="Override any key: --set render.max_length=1024.")]
Model = Annotated[str | None, typer.Option("--model", help="Embedded name, local HF folder (model.name).")]
Tokenizer = Annotated[str | None, typer.Option("--tokenizer", help="Tokenizer folder if not the model's.")]
TemplateOpt = Annotated[str | None, typer.Option("--template", help="model | built-in name | path to .jinja.")]
Inputs = Annotated[list[str] | None, typer.Option("--input", "-i", help="Input JSONL/Parquet (data.train).")]
MaxLen = Annotated[int | None, typer.Option("--max-length", help="Max tokens per example (render.max_length).")]
TrainOn = Annotated[str | None, typer.Option("--train-on", help="all_assistant | last_assistant.")]
OnError = Annotated[str | None, typer.Option("--on-error", help="fail (default) | skip: reject bad records.")]
Format = Annotated[str | None, typer.Option("--format", help="auto | openai | sharegpt | alpaca | prompt_completion")]


def _config(config, sets, **flags):
    """The project config: the file, then `--set`, then the verb's own flags."""
    from .config import load_config

    return load_config(config, sets, flags=flags)


@app.command()
def render(config: Config = None, set: Sets = None, model: Model = None, tokenizer: Tokenizer = None,
           template: TemplateOpt = None, input: Inputs = None, max_length: MaxLen = None, train_on: TrainOn = None,
           on_error: OnError = None, format: Format = None,
           output: Annotated[Path, typer.Option("--output", "-o", help="A datasets (Arrow) folder, or rows in a "
                                                "file ending in .jsonl or .parquet.")] = Path("rendered")) -> None:
    """Render conversations with the chat template into input_ids + labels, with mask and parity reports."""
    from .stages.render import run
    from .stages.show import print_render

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
    from .stages.show import print_inspect

    cfg = _config(config, set, **{"model.name": model, "model.tokenizer": tokenizer, "template.name": template,
                                  "data.train": input, "render.train_on": train_on, "data.format": format})
    print_inspect(run(cfg, index))


@app.command("eval")
def eval_(run_arg: Annotated[Path | None, typer.Argument(
              metavar="RUN", help="Run folder; without -c its run.json supplies the config.")] = None,
          config: Config = None, set: Sets = None,
          run: Annotated[Path | None, typer.Option("--run", help="Run folder (default: runs/<name>).")] = None,
          against: Annotated[str | None, typer.Option(
              "--against", help="Baseline: a run, a checkpoint folder or a model (default: the run's base).")] = None,
          select: Annotated[bool, typer.Option(
              "--select", help="Score every saved checkpoint; pick the best.")] = False,
          judge_url: Annotated[str | None, typer.Option(
              "--judge-url", help="OpenAI-compatible base URL; enables the judge (eval.judge.url).")] = None,
          judge_model: Annotated[str | None, typer.Option("--judge-model", help="eval.judge.model.")] = None,
          max_new_tokens: Annotated[int | None, typer.Option(
              "--max-new-tokens", help="eval.generation.max_new_tokens.")] = None) -> None:
    """Evaluate a run against its base model (or --against): loss, generation checks, judge, regression."""
    from .stages.eval import config_for, run as run_eval
    from .stages.show import log, print_eval, tracker

    cfg, run_dir = config_for(config, run_arg or run, set, {
        "eval.judge.url": judge_url, "eval.judge.model": judge_model, "eval.judge.enabled": True if judge_url else None,
        "eval.generation.max_new_tokens": max_new_tokens})
    print_eval(run_eval(cfg, run_dir, against=against, select=select, log=log("eval"), progress=tracker()))


@app.command()
def curate(config: Config = None, set: Sets = None,
           input: Annotated[list[str] | None, typer.Option("--input", "-i", help="Raw export JSONL/Parquet "
                                                              "(curate.inputs).")] = None,
           out: Annotated[str | None, typer.Option("--out", "-o", help="Output folder (curate.out_dir).")] = None,
           format: Format = None) -> None:
    """Curate raw exports: normalize, PII, dedup, filters, policy, decontaminate, quality, mix, split."""
    from .stages.curate import run
    from .stages.show import print_curate

    cfg = _config(config, set, **{"curate.inputs": input, "curate.out_dir": out, "curate.format": format})
    print_curate(run(cfg))


@app.command()
def train(config: Config = None, set: Sets = None, model: Model = None, template: TemplateOpt = None,
          input: Inputs = None,
          eval_input: Annotated[list[str] | None, typer.Option("--eval", help="Held-out JSONL/Parquet "
                                                                  "(data.eval).")] = None,
          mode: Annotated[str | None, typer.Option("--mode", help="lora | qlora | full (train.mode).")] = None,
          name: Annotated[str | None, typer.Option("--name", help="Run name: runs/<name> (name).")] = None,
          resume: Annotated[bool, typer.Option("--resume", help="Continue from the latest complete checkpoint.")]
          = False) -> None:
    """Fine-tune (LoRA / QLoRA / full) on the rendered data; writes runs/<name>/. Works under torchrun."""
    from .stages.show import print_train
    from .stages.train import run

    cfg = _config(config, set, **{"model.name": model, "template.name": template, "data.train": input,
                                  "data.eval": eval_input, "train.mode": mode, "name": name})
    print_train(run(cfg, resume=resume))


@app.command()
def dpo(config: Config = None, set: Sets = None,
        reference: Annotated[str | None, typer.Option("--reference", help="SFT run folder or checkpoint "
                                                      "(dpo.reference).")] = None,
        input: Annotated[list[str] | None, typer.Option("--input", "-i", help="Preference pairs JSONL/Parquet "
                                                        "(dpo.train).")] = None,
        name: Annotated[str | None, typer.Option("--name", help="DPO run name: runs/<name> (dpo.name; default "
                                                 "<name>-dpo).")] = None,
        resume: Annotated[bool, typer.Option("--resume", help="Continue from the latest complete checkpoint.")]
        = False) -> None:
    """Preference pass (DPO) from an SFT run as the reference, on the same render; writes runs/<name>/."""
    from .stages.dpo import run
    from .stages.show import print_dpo

    cfg = _config(config, set, **{"dpo.reference": reference, "dpo.train": input, "dpo.name": name})
    print_dpo(run(cfg, resume=resume))


@app.command()
def merge(run_dir: Annotated[Path, typer.Argument(help="Run folder (runs/<name>) with a LoRA adapter.")],
          output: Annotated[Path | None, typer.Option("--output", "-o", help="Default: <run>/merged.")] = None,
          checkpoint: Annotated[str | None, typer.Option("--checkpoint", help="checkpoint-<step> instead of "
                                                           "the final adapter.")] = None,
          overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")] = False) -> None:
    """Merge a run's LoRA adapter into its base weights: safetensors that plain transformers loads."""
    from .stages.merge import run
    from .stages.show import print_merge

    print_merge(run(run_dir, output, checkpoint=checkpoint, overwrite=overwrite))


@app.command()
def doctor(config: Config = None, set: Sets = None,
           run: Annotated[Path | None, typer.Option("--run", help="Run folder (default: runs/<name> if it "
                                                     "exists).")] = None,
           json_: Annotated[bool, typer.Option("--json", help="Print the findings as JSON (for CI).")] = False,
           strict: Annotated[bool, typer.Option("--strict", help="Warnings fail too (exit 1).")] = False,
           check: Annotated[list[str] | None, typer.Option("--check", help="Only these checks (by name).")]
           = None) -> None:
    """Check the guide's production checklist and pitfalls against the config, its data and its run."""
    from .stages.doctor import run as run_doctor
    from .stages.show import print_doctor

    result = run_doctor(_config(config, set), config_path=config, run_dir=run, only=check)
    print_doctor(result, as_json=json_, strict=strict)
    raise typer.Exit(result.exit_code(strict))


@app.command()
def serve(run_dir: Annotated[Path, typer.Argument(help="Run folder (runs/<name>) or one of its checkpoint folders.")],
          host: Annotated[str | None, typer.Option("--host", help="Address (serve.host; default 127.0.0.1).")] = None,
          port: Annotated[int | None, typer.Option("--port", help="Port (serve.port; default 8000).")] = None,
          api_key: Annotated[str | None, typer.Option("--api-key", envvar="SFTPIPE_API_KEY",
                                                      help="Require 'Authorization: Bearer KEY'.")] = None,
          config: Config = None, set: Sets = None) -> None:
    """Serve a run as an OpenAI-compatible API (chat completions, streaming, /v1/render) on loopback."""
    from .stages.serve import run
    from .stages.show import log

    run(run_dir, _config(config, set, **{"serve.host": host, "serve.port": port}).serve, api_key=api_key,
        log=log("serve"))


@app.command()
def export(run_dir: Annotated[Path, typer.Argument(help="Run folder (runs/<name>) or one of its checkpoint folders.")],
           out: Annotated[Path, typer.Option("--out", "-o", help="Bundle folder to write (written beside, renamed).")],
           format: Annotated[str, typer.Option("--format", help=formats_help() + ".")] = "hf",
           dtype: Annotated[str, typer.Option("--dtype", help="bf16 | fp16 | fp32 weights; gguf also q8_0.")] = "bf16",
           overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out.")] = False) -> None:
    """Export a run for deployment: merged safetensors (hf), a vLLM bundle, or a GGUF for llama.cpp."""
    from .stages.export import run
    from .stages.show import print_export

    print_export(run(run_dir, out, format=format, dtype=dtype, overwrite=overwrite))


demo_app = typer.Typer(help="The Harbor Support demo: generate -> curate -> train (full weights, as "
                            "configs/harbor.yaml says) -> eval (base vs SFT) -> DPO -> eval (DPO) -> report.")
app.add_typer(demo_app, name="demo")
Size = Annotated[str, typer.Option("--size", help="tiny | small | default (2,400 raw threads).")]
Out = Annotated[Path, typer.Option("--out", "-o", help="Project folder to write (data, curated, runs).")]
Seed = Annotated[int, typer.Option("--seed", help="Generator seed.")]


@demo_app.callback(invoke_without_command=True)
def demo(ctx: typer.Context, size: Size = "default", out: Out = Path("demo-out"), seed: Seed = 0,
         set: Sets = None) -> None:
    """Run the whole Harbor demo in OUT on the embedded default model (SmolLM2-135M-Instruct)."""
    if ctx.invoked_subcommand is None:
        from .stages.demo import run
        from .stages.show import print_demo

        print_demo(run(out, size=size, seed=seed, sets=set))


@demo_app.command("generate")
def demo_generate(size: Size = "default", out: Out = Path("demo-out/data"), seed: Seed = 0) -> None:
    """Only write the synthetic Harbor export, general set, eval sets and policy files."""
    from .demo.generate import generate
    from .stages.show import print_generated

    print_generated(generate(out, size=size, seed=seed))


review_app = typer.Typer(help="Blind pairwise review of two runs' replies by people (SQLite session, web page).",
                         no_args_is_help=True)
app.add_typer(review_app, name="review")
Session = Annotated[Path, typer.Argument(help="Session file (.sqlite) written by `sftpipe review init`.")]
Host = Annotated[str, typer.Option("--host", help="Address to bind (loopback by default).")]
Port = Annotated[int, typer.Option("--port", help="Port to bind.")]


@review_app.command("init")
def review_init(
        run_a: Annotated[str, typer.Option("--from", help="First run: a name under train.output_dir, or its folder.")],
        run_b: Annotated[str, typer.Option("--vs", help="Second run, the same way; `base` for the --from run's "
                                           "base model (its eval's baseline replies), or RUN:base.")],
        config: Config = None, set: Sets = None,
        prompts: Annotated[Path | None, typer.Option("--prompts", help="Only these prompt ids (one per line, or "
                                                     "JSONL with id).")] = None,
        n: Annotated[int | None, typer.Option("--n", help="Prompts to sample (review.n, default 200).")] = None,
        out: Annotated[Path | None, typer.Option("--out", "-o", help="Session file (default: "
                                                 "reviews/<from>-vs-<vs>.sqlite).")] = None) -> None:
    """Build a blind review session from two evaluated runs' generations (stratified by category)."""
    from .stages.review import init
    from .stages.show import print_review_init

    print_review_init(init(_config(config, set), run_a, run_b, out=out, prompts=prompts, n=n))


@review_app.command("add-reviewer")
def review_add_reviewer(session: Session, name: Annotated[str, typer.Argument(help="Reviewer name.")],
                        host: Host = "127.0.0.1", port: Port = 8700,
                        new_link: Annotated[bool, typer.Option("--new-link", help="A new link for an existing "
                                                               "reviewer who lost theirs (the old one stops "
                                                               "working).")] = False) -> None:
    """Register a reviewer and print their personal link (keep it private: the token is the login)."""
    from .stages.review import add_reviewer
    from .stages.show import print_review_link

    print_review_link(add_reviewer(session, name, host=host, port=port, new_link=new_link))


@review_app.command("serve")
def review_serve(session: Session, config: Config = None, set: Sets = None, host: Host = "127.0.0.1",
                 port: Port = 8700) -> None:
    """Serve the review page for a session (every answer is committed before the next item)."""
    from .stages.review import serve
    from .stages.show import log

    serve(_config(config, set), session, host=host, port=port, banner=log("review"))


@review_app.command("export")
def review_export(session: Session,
                  pairs: Annotated[Path | None, typer.Option("--pairs", help="DPO pairs JSONL (TRL prompt/chosen/"
                                                             "rejected).")] = None,
                  rubric: Annotated[Path | None, typer.Option("--rubric", help="Rubric scores JSONL for "
                                                              "eval.human.")] = None,
                  agree: Annotated[bool, typer.Option("--agree", help="Pairs only where every reviewer (>= 2) "
                                                      "gave the same decisive verdict.")] = False) -> None:
    """Export decisive verdicts as DPO pairs and rubric scores in the format `sftpipe eval` imports."""
    from .stages.review import export
    from .stages.show import print_review_export

    print_review_export(export(session, pairs=pairs, rubric=rubric, agree=agree))


@review_app.command("stats")
def review_stats(session: Session,
                 json_: Annotated[bool, typer.Option("--json", help="Print the statistics as JSON.")] = False) -> None:
    """Win rate with CI, rubric means per run, inter-reviewer agreement and consistency."""
    from .stages.review import stats
    from .stages.show import print_review_stats

    print_review_stats(stats(session), as_json=json_)


def main() -> None:
    """Entry point: run the app; known errors print one line (no traceback) and exit non-zero."""
    try:
        app()
    except (SftpipeError, ValueError) as err:  # ValueError: option checks in library code (value, allowed, fix)
        if os.environ.get("SFTPIPE_DEBUG"):
            raise
        typer.echo(f"error: {err}", err=True)
        sys.exit(2 if isinstance(err, (ConfigError, ValueError)) else 1)
    except OSError as err:  # a path the user gave that cannot be read or written (not found, permissions, full)
        if os.environ.get("SFTPIPE_DEBUG") or not err.filename:
            raise
        typer.echo(f"error: {err.filename}: {err.strerror}; fix: check that the path exists and that you may "
                   "read or write it (and that the disk has room)", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
