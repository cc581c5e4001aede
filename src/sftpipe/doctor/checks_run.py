"""Checks on a run folder (read through `sftpipe.runs`): masks, overfitting, provenance, the regression eval, the
DPO plan and serving exports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..errors import SftpipeError
from ..labels import label_runs
from .base import Outcome, check, fail, no_run, ok, skip, warn, worst
from .bundles import bundle_template, export_folders
from .context import Context, read_json

SHARE_BOUNDS = (0.05, 0.95)  # trained share of tokens
TRUNCATION_RATE = 0.05
MAX_EPOCHS, SMALL_DATA, SMALL_DATA_EPOCHS = 3.0, 1000, 2.0
EVAL_RISE = 0.02  # last eval loss above the best by more than this share: rising
IFEVAL_DROP, RETENTION = -0.05, 0.90
MASK_SAMPLE = 64


def _trained_text(tok, ex) -> str:
    return "\n".join(tok.decode(ex.input_ids[a:b]) for a, b, trained in label_runs(ex.labels) if trained)


@check("masks")
def masks(ctx: Context) -> Outcome:
    """Pitfall: "Training on user tokens — Including loss on user prompts teaches the model to imitate customers."

    Re-renders a sample with the run's tokenizer, template and settings: no system/user/tool text is trained and
    no example trains nothing;
    from run.json's mask report: trained share and truncation rate within bounds, every reply's end-of-turn
    trained."""
    from ..config import SftpipeConfig
    from ..dataset import build_examples, build_renderer
    from ..runs import serving_renderer

    if not ctx.train:
        return skip("no training data (data.train is empty or missing)")
    cfg = ctx.cfg
    if ctx.info is not None:
        try:
            cfg = SftpipeConfig.model_validate(ctx.info.config)
        except ValidationError:  # a run written by an older sftpipe: render with the config as it is now
            pass
    try:  # a run renders with its own saved tokenizer and template (what it trained and serves)
        renderer = (serving_renderer(ctx.tokenizer, ctx.info) if ctx.info is not None
                    else build_renderer(cfg.model, cfg.template, cfg.render))
    except SftpipeError as e:
        return skip(f"cannot render without the model's tokenizer ({e})")
    sample = ctx.train[:MASK_SAMPLE]
    examples, _, _ = build_examples(sample, renderer, max_length=cfg.render.max_length,
                                    truncation=cfg.render.truncation, on_error="skip")
    leaks, empty, no_eot = [], [], []
    for ex in examples:
        trained = _trained_text(renderer.tokenizer, ex)
        label = str(ex.meta.get("id", ex.meta.get("index", "?")))
        if not trained:
            empty.append(label)
        if ex.eot_trained < ex.trained_messages:
            no_eot.append(label)
        for m in ex.messages:
            body = str(m.get("content") or "").strip()
            if m.get("role") != "assistant" and len(body) >= 12 and body[:60] in trained:
                leaks.append(f"{label} ({m['role']})")
    found = [ok(f"{len(examples)} sampled examples: no system/user/tool text trained, none empty, every trained "
                "reply ends in its trained end-of-turn token")]
    if no_eot:
        found.append(warn(f"{len(no_eot)} sampled examples have a trained reply without its end-of-turn token (e.g. "
                          f"{', '.join(no_eot[:3])}; truncation {cfg.render.truncation})",
                          "raise render.max_length or use render.truncation drop_oldest_turns"))
    if leaks:
        found.append(fail(f"non-assistant text is trained in {len(leaks)} sampled examples (e.g. "
                          f"{', '.join(leaks[:3])})", "train only assistant turns (render.train_on); report the "
                                                       "template as a bug"))
    if empty:
        found.append(fail(f"{len(empty)} sampled examples train nothing (e.g. {', '.join(empty[:3])})",
                          "drop conversations without an assistant reply"))
    mr = ctx.info.mask_report if ctx.info else {}
    if mr.get("examples"):
        share, trunc = mr.get("trained_share", 0), mr.get("truncated", 0) / mr["examples"]
        found[0] = ok(found[0].evidence + f"; run: trained share {share:.1%}, truncated {trunc:.1%}, end-of-turn "
                                          f"coverage {mr.get('eot_coverage', 0):.0%}")
        if not SHARE_BOUNDS[0] <= share <= SHARE_BOUNDS[1]:
            found.append(warn(f"trained share {share:.1%} outside {SHARE_BOUNDS[0]:.0%}-{SHARE_BOUNDS[1]:.0%}",
                              "check the masks with `sftpipe inspect`: long prompts or system text leave little "
                              "signal, a share near 100% means prompts are trained"))
        if trunc > TRUNCATION_RATE:
            found.append(warn(f"{trunc:.1%} of examples truncated (> {TRUNCATION_RATE:.0%})",
                              "raise render.max_length or use truncation drop_oldest_turns"))
        if mr.get("eot_coverage", 1) < 1:
            found.append(warn(f"end-of-turn coverage {mr['eot_coverage']:.1%}", "every trained reply must train "
                                                                                 "its end-of-turn token"))
    return worst(*found)


def _epochs(ctx: Context) -> tuple[float | None, str]:
    info = ctx.info
    if info is not None:
        logged = [m["epoch"] for m in info.metrics if isinstance(m.get("epoch"), (int, float))]
        if logged:
            return float(max(logged)), "logged by the run"
    t = ctx.cfg.train
    if t.max_steps > 0:
        return None, "max_steps set; no run to read epochs from"
    return float(t.epochs), "train.epochs"


@check("overfitting")
def overfitting(ctx: Context) -> Outcome:
    """Pitfall: "Too many epochs on small data — Memorizes ticket IDs and example names."

    Epochs within 1-3 (at most 2 on under 1,000 examples), and the run's eval loss does not rise while its train
    loss falls."""
    epochs, source = _epochs(ctx)
    n = (ctx.info.mask_report.get("examples") if ctx.info else None) or len(ctx.train)
    if not n and ctx.info is None:
        return skip("no training data and no run (data.train is empty or missing)")
    if epochs is None:
        return skip("train.max_steps is set: the epochs are known once the run logs them")
    found = [ok(f"{epochs:.2g} epochs ({source}) over {n:,} examples" if epochs is not None else source)]
    if epochs is not None and (epochs > MAX_EPOCHS or (n < SMALL_DATA and epochs > SMALL_DATA_EPOCHS)):
        found.append(warn(f"{epochs:.2g} epochs over {n:,} examples", "1-3 passes (fewer on small specialized "
                                                                       "sets); watch held-out loss"))
    if ctx.info is None:
        return worst(*found)
    evals = [(m.get("step"), m["eval_loss"]) for m in ctx.info.metrics if "eval_loss" in m]
    losses = [m["loss"] for m in ctx.info.metrics if "loss" in m]
    if len(evals) < 2:
        found.append(warn(f"{len(evals)} eval-loss point(s) in run.json metrics: the curve cannot be judged",
                          "set data.eval and train.eval_steps so held-out loss is logged several times"))
        return worst(*found)
    best_step, best = min(evals, key=lambda e: e[1])
    last_step, last = evals[-1]
    k = max(1, len(losses) // 3)
    falling = len(losses) >= 2 and sum(losses[-k:]) / k < sum(losses[:k]) / k
    found[0] = ok(found[0].evidence + f"; eval loss {evals[0][1]:.4f} -> best {best:.4f} (step {best_step}) -> "
                                      f"last {last:.4f} (step {last_step})")
    if last > best * (1 + EVAL_RISE) and falling:
        final = ctx.info.results.get("final_weights")
        found.append(warn(f"eval loss rose {last / best - 1:.1%} after step {best_step} while train loss fell "
                          f"(final weights: {final or 'last'}, best checkpoint {ctx.info.best_checkpoint})",
                          "fewer epochs, more data, or keep the best checkpoint (train.early_stopping_patience)"))
    return worst(*found)


@check("provenance")
def provenance(ctx: Context) -> Outcome:
    """Checklist: "Log checkpoints with data hash, hyperparameters, and eval rubric scores."

    run.json and the model card record the data hash, hyperparameters, template, library versions, the git
    commit and eval scores."""
    from ..runs.card import read_card

    info = ctx.info
    if info is None:
        return no_run(ctx)
    have: dict[str, Any] = {"data hash": info.data.get("train_hash"), "hyperparameters": info.config.get("train"),
                            "template": info.template and info.template.sha256,
                            "versions": info.versions.get("transformers"), "git commit": info.git_commit}
    missing = [k for k, v in have.items() if not v]
    card = ctx.run_dir / "README.md"
    head = read_card(card)[0].get("sftpipe", {}) if card.is_file() else {}
    card_missing = [k for k, v in {"data hash": (head.get("data") or {}).get("train_hash"),
                                   "hyperparameters": head.get("hyperparameters"),
                                   "template": (head.get("template") or {}).get("sha256")}.items() if not v]
    dirty = " (uncommitted changes)" if (info.git or {}).get("dirty") else ""
    found = [ok(f"run.json and model card: data hash {str(have['data hash'])[:12]}, hyperparameters, template, "
                f"transformers {have['versions']}, commit {str(info.git_commit)[:10]}{dirty}, "
                f"eval {'recorded' if info.eval else 'missing'}; run {ctx.run[1]}")]
    if missing:
        found.append(fail(f"run.json lacks {', '.join(missing)}", "re-run `sftpipe train` from a git checkout"))
    if not card.is_file() or card_missing:
        found.append(fail(f"model card {card} lacks {', '.join(card_missing) or 'everything (missing)'}",
                          "re-run `sftpipe train` (it writes the card)"))
    if not info.eval or not head.get("eval"):
        found.append(warn("no eval scores in run.json / the model card", "run `sftpipe eval -c sftpipe.yaml`"))
    if ctx.run[1] != "complete":
        found.append(fail(ctx.run[1], "finish or re-run the run"))
    return worst(*found)


@check("regression-tested")
def regression_tested(ctx: Context) -> Outcome:
    """Checklist: "Regression-test general capabilities after domain SFT."

    The run's eval ran IFEval and/or general NLL against the baseline; the IFEval drop stays within 5 points and
    general retention (exp(baseline NLL - NLL)) above 0.9."""
    info = ctx.info
    if info is None:
        return no_run(ctx)
    if not info.eval:
        return warn(f"{ctx.run_dir} has not been evaluated", "run `sftpipe eval -c sftpipe.yaml` (regression on by "
                                                             "default)")
    cands = info.eval.get("candidates") or {}
    label = (info.eval.get("selection") or {}).get("best") or ("final" if "final" in cands else next(iter(cands),
                                                                                                      None))
    d = (cands.get(label) or {}).get("deltas") or {}
    ife, ret = d.get("ifeval_prompt_level_strict"), d.get("general_retention")
    if ife is None and ret is None:
        return warn(f"eval of {label} has no regression deltas", "enable eval.regression.ifeval and/or set "
                                                                 "eval.regression.general")
    said = (f"{label} vs {info.eval.get('baseline')}: IFEval prompt-strict delta {ife if ife is not None else '-'}, "
            f"general retention {ret if ret is not None else '-'}")
    if (ife is not None and ife < IFEVAL_DROP) or (ret is not None and ret < RETENTION):
        return fail(said + f" (bounds: IFEval >= {IFEVAL_DROP}, retention >= {RETENTION})",
                    "catastrophic forgetting: mix more general data (curate.mix.ratio), lower lr or epochs")
    return ok(said)


def _preference_files(ctx: Context) -> list[Path]:
    paths = [v for v in ctx.section("dpo").values() if isinstance(v, str)]
    paths += [p for v in ctx.section("dpo").values() if isinstance(v, list) for p in v if isinstance(p, str)]
    found = []
    for p in dict.fromkeys(paths):
        path = Path(p)
        if path.is_file() and path.suffix in (".jsonl", ".parquet"):
            found.append(path)
    return found


@check("dpo-planned")
def dpo_planned(ctx: Context) -> Outcome:
    """Checklist: "Plan DPO or RLHF stage if pairwise preference data exists post-SFT."

    Preference data (dpo.train / dpo.eval files) without a DPO run warns; a DPO run (run.json kind dpo) must name
    this SFT run as its reference (run.json `reference`), an SFT run with the template it recorded."""
    runs = ctx.runs()
    dpo_runs = [(p, i) for p, i in runs if getattr(i, "kind", "sft") == "dpo"]
    prefs = _preference_files(ctx)
    if not dpo_runs:
        if not prefs:
            return skip("no preference data (no dpo.train / dpo.eval file) and no DPO run")
        planned = ctx.section("dpo").get("reference")
        sft = ctx.run_dir if ctx.info is not None and ctx.info.kind == "sft" else None
        if sft is None or ctx.run[1] != "complete":  # DPO comes after SFT: nothing is late yet
            return skip(f"preference data {', '.join(map(str, prefs))} waits for a complete SFT run (DPO starts "
                        "from it)")
        aim = f"; dpo.reference is {planned}" if planned else "; dpo.reference is not set"
        if planned and sft is not None and Path(planned).resolve() not in (sft.resolve(), *(
                p.resolve() for p in (sft / "checkpoints").glob("checkpoint-*"))):
            aim += f", not the SFT run {sft}"
        return warn(f"preference data {', '.join(map(str, prefs))} exists but no DPO run{aim}",
                    f"run DPO with the SFT run {sft or 'runs/<name>'} as reference (dpo.reference, `sftpipe dpo`)")
    sft = ctx.run_dir if ctx.info is not None and ctx.info.kind == "sft" else None
    found = []
    for path, info in dpo_runs:
        if not hasattr(info, "reference"):
            found.append(skip(f"{path}: this run.json schema has no reference field"))
            continue
        ref = info.reference or {}
        named = [str(ref[k]) for k in ("run", "name") if isinstance(ref.get(k), str)] or \
            [str(v) for v in ref.values() if isinstance(v, str)]
        if not named:
            found.append(fail(f"{path} (DPO) names no reference run", "start DPO from the SFT checkpoint"))
            continue
        target = Path(named[0])
        ref_info = next((i for p, i in runs if p.resolve() == target.resolve() or p.name == target.name), None)
        if sft is not None and not any(n in (sft.name, str(sft), str(sft.resolve())) or Path(n).name == sft.name
                                       for n in named):
            found.append(fail(f"{path} (DPO) reference {named[0]} is not the SFT run {sft}",
                              f"start DPO with {sft} as its reference policy (dpo.reference)"))
        elif ref_info is not None and ref_info.kind != "sft":
            found.append(fail(f"{path} (DPO) reference {named[0]} is a {ref_info.kind} run, not an SFT run",
                              "point dpo.reference at the SFT run"))
        elif (ref_info is not None and ref.get("template_sha256") and ref_info.template
              and ref["template_sha256"] != ref_info.template.sha256):
            found.append(fail(f"{path} (DPO) recorded template {str(ref['template_sha256'])[:12]}, the SFT run has "
                              f"{ref_info.template.sha256[:12]}", "re-run DPO from the SFT run as it is now"))
        else:
            found.append(ok(f"{path} (DPO) reference {named[0]}"
                            + (f" {ref['checkpoint']}" if isinstance(ref.get("checkpoint"), str) else "")))
    return worst(*found)


ENGINE_FORMATS = ("vllm", "gguf")  # exports an outside engine serves


@check("serving")
def serving(ctx: Context) -> Outcome:
    """Guide: "The template used at training time must byte-match deployment ... enforce it in the inference server."

    Every export or serve config of the run carries the run's template (sha256) and stops on its end-of-turn
    tokens."""
    info = ctx.info
    if info is None:
        return no_run(ctx)
    folders = export_folders(ctx)
    serve = {k: v for k, v in ctx.section("serve").items() if k in ("template", "stop", "stop_tokens")}
    if not folders and not serve:
        return skip(f"no export of {ctx.run_dir} (no `sftpipe export` bundle naming it, no merged/); `sftpipe "
                    "serve` serves the run folder itself, checked by template-parity and end-of-turn")
    ref, eot = (info.template.sha256 if info.template else None), set(info.template.end_of_turn_ids
                                                                    if info.template else [])
    found = []
    for folder in folders:
        t, eos = bundle_template(folder)
        missing = eot - eos
        if t != ref:
            found.append(fail(f"{folder}: template sha256 {str(t)[:12]} != the run's {str(ref)[:12]}",
                              "re-export with `sftpipe export` (the run's tokenizer and template)"))
        if missing:
            found.append(fail(f"{folder}: generation_config eos lacks end-of-turn {sorted(missing)}",
                              "re-export with `sftpipe export` (eos covers every end-of-turn id)"))
        if t == ref and not missing:
            found.append(ok(f"{folder}: same template, stops on {sorted(eot)}"))
    engines = [f for f in folders if (read_json(f / "export.json") or {}).get("format") in ENGINE_FORMATS]
    if engines and not ctx.section("serve").get("engine"):
        found.append(warn(f"{', '.join(map(str, engines))}: an engine export with no `serve.engine` front: served "
                          "by vLLM or llama-server directly, a user's '<|im_end|>' becomes a control token (their "
                          "OpenAI endpoints tokenize control strings in content; sftpipe's render keeps them text)",
                          "serve it behind the front: `sftpipe serve RUN --set serve.engine=URL` (README: Serve "
                          "and deploy), so the engine gets the token ids training rendered"))
    stops = serve.get("stop") or serve.get("stop_tokens")
    if isinstance(stops, list):
        names = set(ctx.tokenizer.convert_ids_to_tokens(sorted(eot)))
        if not names <= set(map(str, stops)):
            found.append(fail(f"serve stop tokens {stops} lack end-of-turn {sorted(names - set(stops))}",
                              "stop on the template's end-of-turn token(s)"))
    template = serve.get("template")
    if isinstance(template, str) and template not in ("model", info.template.name if info.template else ""):
        found.append(fail(f"serve.template {template!r} is not the run's ({info.template.name})",
                          "serve with the run's own template (template: model)"))
    return worst(*found) if found else ok(f"serve section {serve} matches the run's template and stop tokens")
