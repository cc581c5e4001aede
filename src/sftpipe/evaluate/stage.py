"""`sftpipe eval`: evaluate a run (or every saved checkpoint of it, `select`) against a baseline.

Read top to bottom: load the eval sets -> evaluate the baseline (held-out loss, generation with the serving
template, schema / policy / correctness checks, IFEval, general NLL) -> the same for each candidate, plus the
pairwise judge against the baseline and the combined score -> write runs/<name>/eval/ (metrics.json,
report.html, plots/, generations/, judge/) -> record the summary in run.json and the model card.

Only one model is in memory at a time; the baseline's replies are kept for the judge.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..config import SftpipeConfig
from ..errors import ConfigError, ModelError
from ..io import write_json, write_jsonl
from ..train.load import read_run_info
from .config import EvalConfig, EvalSetConfig
from .generate import generate
from .items import EvalItem, category_counts, load_items
from .judge import JudgeClient, judge_pairs, load_rubric, pair_rows
from .judge import summarize as summarize_judge
from .load import EvalModel, checkpoints, load_reference, load_run_model
from .loss import heldout_loss
from .regression import deltas, general_items, run_regression
from .score import check_reply, combined_score, load_human, load_policy, pooled_components, summarize_checks
from .stats import frequency_deciles

DECILE_DEFINITION = ("categories ranked by training count (descending); decile = 1 + floor(10 * count of all "
                     "more frequent categories / total): 1 = head, 10 = tail and categories unseen in training")
Log = Callable[[str], None]


@dataclass
class EvalResult:
    """What an eval run wrote, the metrics, and (with select) the chosen checkpoint."""

    out_dir: Path
    metrics_path: Path
    report_path: Path
    metrics: dict
    best: str | None = None
    scores: dict[str, float | None] = field(default_factory=dict)


@dataclass
class _Inputs:
    """Everything that is the same for every model evaluated."""

    cfg: EvalConfig
    sets: list[EvalSetConfig]
    items: dict[str, list[EvalItem]]
    deciles: dict[str, int]
    policy: object
    general: list[EvalItem]
    max_length: int
    out_dir: Path
    log: Log


def default_run_dir(cfg: SftpipeConfig) -> Path:
    """runs/<name>, or train.output_dir/<name> when the config has a train section."""
    train = getattr(cfg, "train", None)
    return Path(getattr(train, "output_dir", None) or "runs") / cfg.name


def eval_sets(cfg: SftpipeConfig) -> list[EvalSetConfig]:
    """The configured eval sets; without any, each `data.eval` file as a plain held-out set."""
    if cfg.eval.sets:
        return list(cfg.eval.sets)
    if not cfg.data.eval:
        raise ConfigError("config", ["eval.sets is empty and data.eval names no file; fix: list eval sets under "
                                     "eval.sets (name, path) or set data.eval"])
    return [EvalSetConfig(name=Path(p).stem, path=p, format=cfg.data.format) for p in cfg.data.eval]


def training_category_counts(info: dict, key: str, fallback: list[EvalItem]) -> tuple[dict[str, int], str]:
    """Category counts of the training data: run.json data.category_counts, else the run's data.train files,
    else the eval items themselves; returns (counts, source)."""
    data = info.get("data") or {}
    if isinstance(data.get("category_counts"), dict):
        return dict(data["category_counts"]), "run.json data.category_counts"
    paths = [p for p in ((info.get("config") or {}).get("data") or {}).get("train", []) if Path(p).is_file()]
    if paths:
        return dict(category_counts(paths, key)), f"training files {paths}"
    counts: dict[str, int] = {}
    for it in fallback:
        counts[it.category] = counts.get(it.category, 0) + 1
    return counts, "eval items (no training data found)"


def _device(cfg: EvalConfig) -> str:
    import torch

    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("eval", ["device: cuda, but torch sees no CUDA device; fix: set eval.device: auto"])
    return "cuda" if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()) else "cpu"


def _release() -> None:
    """Free the memory of a model the caller has just dropped."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def evaluate_model(em: EvalModel, inp: _Inputs) -> tuple[dict, dict[str, list[str]]]:
    """All per-model metrics; writes eval/generations/<label>/. Returns (metrics, replies per set)."""
    cfg, gen = inp.cfg, inp.cfg.generation
    folder = inp.out_dir / "generations" / em.label
    metrics: dict = {"model": em.describe(), "sets": {}}
    replies: dict[str, list[str]] = {}
    for s in inp.sets:
        items, entry = inp.items[s.name], {}
        if s.loss:
            inp.log(f"{em.label}: held-out loss on {s.name} ({len(items)} records)")
            entry["loss"] = heldout_loss(em.model, em.renderer, items, inp.deciles, max_length=inp.max_length,
                                         tokens_per_batch=cfg.loss_tokens_per_batch)
        if s.generate:
            inp.log(f"{em.label}: generating {len(items)} replies for {s.name}")
            outputs, stats = generate(em.model, em.renderer, [it.prompt for it in items],
                                      max_new_tokens=gen.max_new_tokens, batch_size=gen.batch_size,
                                      do_sample=gen.do_sample, temperature=gen.temperature, top_p=gen.top_p,
                                      seed=gen.seed)
            checks = [check_reply(o.text, it, inp.policy) for it, o in zip(items, outputs)]
            entry["checks"] = summarize_checks(checks, [it.category for it in items])
            entry["generation"] = stats.to_dict()
            entry["generation"]["finished_by_length"] = sum(o.finish == "length" for o in outputs)
            replies[s.name] = [o.text for o in outputs]
            write_jsonl(folder / f"{s.name}.jsonl", [
                {"id": it.id, "category": it.category, "prompt": it.prompt, "reference": it.target,
                 "output": o.text, "new_tokens": o.new_tokens, "finish": o.finish, "schema": it.schema_name,
                 "expected": it.expected, **c} for it, o, c in zip(items, outputs, checks)])
        metrics["sets"][s.name] = entry
    if cfg.regression.ifeval or inp.general:
        inp.log(f"{em.label}: regression (IFEval subset {cfg.regression.ifeval_subset}, general NLL)")
        metrics["regression"], rows = run_regression(em, cfg.regression, gen, inp.general,
                                                     max_length=inp.max_length,
                                                     tokens_per_batch=cfg.loss_tokens_per_batch)
        if rows:
            write_jsonl(folder / "ifeval.jsonl", rows)
    gen_sets = [e["checks"] for e in metrics["sets"].values() if "checks" in e]
    metrics["components"] = pooled_components(gen_sets)
    if "ifeval" in metrics.get("regression", {}):
        metrics["components"]["ifeval"] = round(metrics["regression"]["ifeval"]["prompt_level_strict"], 4)
    return metrics, replies


def compare(label: str, cand: dict, cand_replies: dict[str, list[str]], base: dict,
            base_replies: dict[str, list[str]], inp: _Inputs, human: dict[str, dict]) -> dict:
    """Candidate vs baseline: judge (both orders), regression deltas, and the score components."""
    cfg = inp.cfg
    out: dict = {"deltas": deltas(cand.get("regression", {}), base.get("regression", {}))}
    for name, entry in cand["sets"].items():
        b = base["sets"].get(name, {})
        if entry.get("loss") and b.get("loss"):
            out["deltas"][f"loss/{name}"] = round(entry["loss"]["overall"]["loss"] - b["loss"]["overall"]["loss"], 6)
    components = dict(cand["components"])
    if "general_retention" in out["deltas"]:
        components["general_retention"] = round(out["deltas"]["general_retention"], 4)
    if cfg.judge.enabled:
        judged = [s.name for s in inp.sets if s.generate and s.judge and (cfg.judge.sets is None
                                                                          or s.name in cfg.judge.sets)]
        client, rubric, pairs = judge_client(cfg), load_rubric(cfg.judge.rubric), []
        for name in judged:
            n = min(len(inp.items[name]), cfg.judge.max_prompts or len(inp.items[name]))
            inp.log(f"{label}: judging {n} pairs of {name} in both orders at {cfg.judge.url}")
            pairs += judge_pairs(client, rubric, inp.items[name][:n], cand_replies[name][:n],
                                 base_replies[name][:n], concurrency=cfg.judge.concurrency)
        write_jsonl(inp.out_dir / "judge" / f"{label}.jsonl", pair_rows(pairs))
        out["judge"] = summarize_judge(pairs, n_boot=cfg.judge.n_boot, seed=cfg.judge.seed)
        out["judge"]["per_set"] = {name: summarize_judge([p for p in pairs if p.set == name], n_boot=cfg.judge.n_boot,
                                                         seed=cfg.judge.seed) for name in judged}
        if pairs:
            components["win_rate"] = out["judge"]["win_rate"]
            components["length_controlled_win_rate"] = out["judge"]["length_controlled_win_rate"]
    if label in human:
        components.update({k: v for k, v in human[label].items() if k.startswith("human_")})
        out["human"] = human[label]
    out["components"] = components
    out["score"] = combined_score(components, cfg.weights)
    return out


def judge_client(cfg: EvalConfig) -> JudgeClient:
    """The judge client that eval.judge describes (the API key from the named environment variable)."""
    j = cfg.judge
    key = os.environ.get(j.api_key_env) if j.api_key_env else None
    return JudgeClient(j.url, j.model, key, j.timeout_s, j.retries, j.max_tokens)


def _select(comparisons: dict[str, dict], weights: dict[str, float]) -> tuple[str, str, dict[str, float | None]]:
    """Best candidate by combined score over the components every candidate has; ties go to the earliest."""
    common = set.intersection(*(set(c["components"]) for c in comparisons.values()))
    scores = {k: combined_score({n: v for n, v in c["components"].items() if n in common}, weights)["score"]
              for k, c in comparisons.items()}
    ranked = sorted(scores, key=lambda k: -(scores[k] if scores[k] is not None else -1.0))
    best = ranked[0]
    reason = (f"{best} has the highest combined score ({scores[best]}) over the components measured for every "
              f"checkpoint ({', '.join(sorted(c for c in common if weights.get(c, 0) > 0)) or 'none'})")
    if len(ranked) > 1:
        reason += f"; runner-up {ranked[1]} ({scores[ranked[1]]})"
    return best, reason, scores


def _human_for(cfg: EvalConfig, run_dir: Path) -> dict[str, dict]:
    if not cfg.human:
        return {}
    ratings = load_human(cfg.human, cfg.human_scale)
    if run_dir.name in ratings and "final" not in ratings:
        ratings["final"] = ratings[run_dir.name]  # the run's own name stands for its final weights
    return ratings


def run(cfg: SftpipeConfig, run_dir: Path, *, against: str | None = None, select: bool = False,
        log: Log | None = None) -> EvalResult:
    """Evaluate `run_dir` (every checkpoint with `select`) against `against`, else eval.against, else the run's
    base model; write run_dir/eval/ and record the summary in run.json and the model card."""
    from .report import update_card, update_run_json, write_report

    t0 = time.perf_counter()
    log = log or (lambda _msg: None)
    run_dir = Path(run_dir)
    info = read_run_info(run_dir)
    ecfg = cfg.eval
    sets = eval_sets(cfg)
    items = {s.name: load_items(s, ecfg.schemas) for s in sets}
    all_items = [it for v in items.values() for it in v]
    counts, counts_source = training_category_counts(info, sets[0].category_key, all_items)
    deciles = frequency_deciles(counts, sorted({it.category for it in all_items}))
    max_length = ((info.get("config") or {}).get("render") or {}).get("max_length") or cfg.render.max_length
    out_dir = run_dir / "eval"
    inp = _Inputs(ecfg, sets, items, deciles, load_policy(ecfg.rules, ecfg.policy), general_items(ecfg.regression),
                  max_length, out_dir, log)
    baseline_ref = against or ecfg.against or info.get("base_model")
    if not baseline_ref:
        raise ModelError(f"{run_dir}/run.json names no base_model; fix: pass --against RUN_OR_MODEL")
    device = _device(ecfg)
    human = _human_for(ecfg, run_dir)
    if ecfg.judge.enabled:  # fail before the models run, not after
        judge_client(ecfg).complete("Reply with one word: tie.")

    log(f"baseline: {baseline_ref}")
    em = load_reference(str(baseline_ref), label="baseline", template=cfg.template.name)
    em.model.to(device)
    base, base_replies = evaluate_model(em, inp)
    del em
    _release()

    labels = [*checkpoints(run_dir), "final"] if select else ["final"]
    if select and len(labels) == 1:
        log("no saved checkpoints: scoring the final weights only")
    models, comparisons = {"baseline": base}, {}
    for label in labels:
        em = load_run_model(run_dir, None if label == "final" else label)
        em.model.to(device)
        models[label], replies = evaluate_model(em, inp)
        del em
        _release()
        comparisons[label] = compare(label, models[label], replies, base, base_replies, inp, human)

    best, reason, scores = None, None, {k: c["score"]["score"] for k, c in comparisons.items()}
    if select:
        best, reason, scores = _select(comparisons, ecfg.weights)
    metrics = {
        "run": str(run_dir), "baseline": base["model"], "candidates": labels, "models": models,
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
