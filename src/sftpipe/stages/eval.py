"""`sftpipe eval`: evaluate a run (or every saved checkpoint of it, `select`) against a baseline.

Read top to bottom: load the eval sets -> evaluate the baseline (held-out loss, generation with the serving
template, schema / policy / correctness checks, IFEval, general NLL) -> the same for each candidate, plus the
pairwise judge against the baseline and the combined score -> write runs/<name>/eval/ (metrics.json,
report.html, plots/, generations/, judge/) -> record the summary in run.json and the model card.

Only one model is in memory at a time; the baseline's replies are kept for the judge. A plain model baseline's
results are cached (sftpipe.evaluate.cache, `eval.cache_baseline`), so evaluating it again loads nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..config import SftpipeConfig, load_config
from ..config.evaluate import EvalSetConfig
from ..demo.policy import PLUGINS
from ..errors import ConfigError, ModelError
from ..evaluate.cache import baseline_cache
from ..evaluate.evaluator import (DECILE_DEFINITION, Inputs, compare, device_for, evaluate_model,
                                  human_for, judge_client, release, select_best, training_category_counts)
from ..evaluate.items import load_items
from ..evaluate.load import checkpoints, load_reference, load_run_model
from ..evaluate.regression import general_items
from ..evaluate.report import update_card, update_run_json, write_report
from ..evaluate.score import Policy, load_policy
from ..stats import frequency_deciles
from ..io import write_json
from ..runs import require_complete


@dataclass
class EvalResult:
    """What an eval run wrote, the metrics, and (with select) the chosen checkpoint."""

    out_dir: Path
    metrics_path: Path
    report_path: Path
    metrics: dict
    best: str | None = None
    scores: dict[str, float | None] = field(default_factory=dict)


def default_run_dir(cfg: SftpipeConfig) -> Path:
    """runs/<name>, or train.output_dir/<name> when the config has a train section."""
    train = getattr(cfg, "train", None)
    return Path(getattr(train, "output_dir", None) or "runs") / cfg.name


def config_for(config: Path | None, run_dir: Path | None, sets: list[str] | None, flags: dict
               ) -> tuple[SftpipeConfig, Path]:
    """The config and run folder for an eval: the given config file, else (with a run folder) the config the run
    was trained with, as recorded in its run.json; overrides and flags apply on top either way."""
    if config is None and run_dir is not None:
        cfg = load_config(None, sets, base=require_complete(run_dir).config, flags=flags)
    else:
        cfg = load_config(config, sets, flags=flags)
    return cfg, Path(run_dir) if run_dir is not None else default_run_dir(cfg)


def eval_sets(cfg: SftpipeConfig) -> list[EvalSetConfig]:
    """The configured eval sets; without any, each `data.eval` file as a plain held-out set."""
    if cfg.eval.sets:
        return list(cfg.eval.sets)
    if not cfg.data.eval:
        raise ConfigError("config", ["eval.sets is empty and data.eval names no file; fix: list eval sets under "
                                     "eval.sets (name, path) or set data.eval"])
    return [EvalSetConfig(name=Path(p).stem, path=p, format=cfg.data.format) for p in cfg.data.eval]


def policy_for(cfg: SftpipeConfig) -> Policy | None:
    """The reply checker that eval.rules / eval.policy name (the Harbor demo's checker is a plug-in)."""
    return load_policy(cfg.eval.rules, cfg.eval.policy, plugins=PLUGINS)


def run(cfg: SftpipeConfig, run_dir: Path, *, against: str | None = None, select: bool = False,
        log: Callable[[str], None] | None = None, policy: Policy | None = None,
        progress: Callable[[str, int], Callable[[int], None]] | None = None) -> EvalResult:
    """Evaluate `run_dir` (every checkpoint with `select`) against `against`, else eval.against, else the run's
    base model; write run_dir/eval/ and record the summary in run.json and the model card. `policy` (any object
    with the checker interface) replaces the one the config names."""
    t0 = time.perf_counter()
    log = log or (lambda _msg: None)
    run_dir = Path(run_dir)
    info = require_complete(run_dir)
    ecfg = cfg.eval
    sets = eval_sets(cfg)
    items = {s.name: load_items(s, ecfg.schemas) for s in sets}
    all_items = [it for v in items.values() for it in v]
    counts, counts_source = training_category_counts(info, sets[0].category_key, all_items)
    deciles = frequency_deciles(counts, sorted({it.category for it in all_items}))
    max_length = info.section("render").get("max_length") or cfg.render.max_length
    out_dir = run_dir / "eval"
    inp = Inputs(ecfg, sets, items, deciles, policy if policy is not None else policy_for(cfg),
                 general_items(ecfg.regression), max_length, out_dir, log, progress)
    baseline_ref = against or ecfg.against or info.base_model
    if not baseline_ref:
        raise ModelError(f"{run_dir}/run.json names no base_model; fix: pass --against RUN_OR_MODEL")
    device = device_for(ecfg)
    human = human_for(ecfg, run_dir)
    if ecfg.judge.enabled:  # fail before the models run, not after
        judge_client(ecfg).complete("Reply with one word: tie.")

    # The baseline: a plain model's results come from the eval cache when this same eval already ran
    # (a policy object passed in is not part of the cache key, so it turns the cache off)
    cache = baseline_cache(str(baseline_ref), inp, template=cfg.template.name, device=device) \
        if ecfg.cache_baseline and policy is None else None
    cached = cache.load("baseline") if cache else None
    log(f"baseline: {baseline_ref}" + (f" (cached eval {cache.key[:12]})" if cached else ""))
    if cached:
        base, base_replies = cached
    else:
        em = load_reference(str(baseline_ref), label="baseline", template=cfg.template.name)
        em.model.to(device)
        base, base_replies = evaluate_model(em, inp)
        del em
        release()
        if cache:
            cache.store("baseline", base, base_replies)

    # Each candidate (final weights, or every checkpoint with select), against the baseline
    labels = [*checkpoints(run_dir), "final"] if select else ["final"]
    if select and len(labels) == 1:
        log("no saved checkpoints: scoring the final weights only")
    models, comparisons = {"baseline": base}, {}
    for label in labels:
        em = load_run_model(run_dir, None if label == "final" else label)
        em.model.to(device)
        models[label], replies = evaluate_model(em, inp)
        del em
        release()
        comparisons[label] = compare(label, models[label], replies, base, base_replies, inp, human)

    # Select, write, record
    best, reason, scores = None, None, {k: c["score"]["score"] for k, c in comparisons.items()}
    if select:
        best, reason, scores = select_best(comparisons, ecfg.weights)
    metrics = {
        "run": str(run_dir), "baseline": base["model"], "candidates": labels, "models": models,
        "baseline_cache": cache.record(hit=cached is not None) if cache else None,
        "comparisons": comparisons, "selection": {"best": best, "reason": reason, "scores": scores} if select
        else None,
        "frequency_deciles": {"deciles": deciles, "category_counts": counts, "source": counts_source,
                              "definition": DECILE_DEFINITION},
        "sets": {s.name: {"path": s.path, "records": len(items[s.name])} for s in sets},
        "config": ecfg.model_dump(mode="json"), "seconds": round(time.perf_counter() - t0, 2),
    }
    metrics_path = out_dir / "metrics.json"
    write_json(metrics_path, metrics)
    report_path = write_report(out_dir, metrics)
    summary = update_run_json(run_dir, metrics)
    update_card(run_dir, summary)
    return EvalResult(out_dir, metrics_path, report_path, metrics, best, scores)
