"""The pieces of an eval run: the eval sets, one model's metrics (`evaluate_model`), a candidate against the
baseline (`compare`: judge, regression deltas, combined score) and checkpoint selection. The stage that ties them
together, one model in memory at a time, is `sftpipe.stages.eval`."""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..chat_client import ChatClient, api_key
from ..checks import schema_valid
from ..config.evaluate import EvalConfig, EvalSetConfig
from ..errors import ConfigError
from ..io import write_jsonl
from ..runs import RunInfo
from ..generate import generate
from .items import EvalItem, category_counts
from .judge import judge_pairs, load_rubric, pair_rows
from .judge import summarize as summarize_judge
from .load import EvalModel
from .loss import heldout_loss
from .regression import deltas, run_regression
from .score import (check_reply, combined_score, load_human, pooled_components, pooled_rate, summarize_checks,
                    validity)

DECILE_DEFINITION = ("categories ranked by training count (descending); decile = 1 + floor(10 * count of all "
                     "more frequent categories / total): 1 = head, 10 = tail and categories unseen in training")
Log = Callable[[str], None]


@dataclass
class Inputs:
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
    progress: Callable[[str, int], Callable[[int], None]] | None = None  # (label, total) -> advance(n): a bar


def training_category_counts(info: RunInfo, key: str, fallback: list[EvalItem]) -> tuple[dict[str, int], str]:
    """Category counts of the training data: run.json data.category_counts, else the run's data.train files,
    else the eval items themselves; returns (counts, source)."""
    if isinstance(info.data.get("category_counts"), dict):
        return dict(info.data["category_counts"]), "run.json data.category_counts"
    paths = [p for p in info.section("data").get("train", []) if Path(p).is_file()]
    if paths:
        return dict(category_counts(paths, key)), f"training files {paths}"
    counts: dict[str, int] = {}
    for it in fallback:
        counts[it.category] = counts.get(it.category, 0) + 1
    return counts, "eval items (no training data found)"


def device_for(cfg: EvalConfig) -> str:
    import torch

    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("eval", ["device: cuda, but torch sees no CUDA device; fix: set eval.device: auto"])
    return "cuda" if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()) else "cpu"


def release() -> None:
    """Free the memory of a model the caller has just dropped."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def evaluate_model(em: EvalModel, inp: Inputs) -> tuple[dict, dict[str, list[str]]]:
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
                                      seed=gen.seed,
                                      progress=inp.progress(f"{em.label} {s.name}", len(items)) if inp.progress
                                      else None)
            checks = [check_reply(o.text, it, inp.policy) for it, o in zip(items, outputs)]
            entry["checks"] = summarize_checks(checks, [it.category for it in items])
            entry["generation"] = stats.to_dict()
            entry["generation"]["finished_by_length"] = sum(o.finish == "length" for o in outputs)
            replies[s.name] = [o.text for o in outputs]
            write_jsonl(folder / f"{s.name}.jsonl", [
                {"id": it.id, "category": it.category, "prompt": it.prompt, "reference": it.target,
                 "output": o.text, "new_tokens": o.new_tokens, "finish": o.finish, "schema": it.schema_name,
                 "expected": it.expected, **c} for it, o, c in zip(items, outputs, checks)])
            if cfg.constrained_schema and any(it.schema is not None for it in items):
                entry["checks"]["schema_validity_constrained"], entry["generation_constrained"] = \
                    constrained_validity(em, inp, s.name, items, folder)
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
    constrained = [c["schema_validity_constrained"] for c in gen_sets if "schema_validity_constrained" in c]
    if constrained:  # an extra measurement beside the components, never part of the score
        metrics["schema_validity_constrained"] = pooled_rate(constrained)
    if "ifeval" in metrics.get("regression", {}):
        metrics["components"]["ifeval"] = round(metrics["regression"]["ifeval"]["prompt_level_strict"], 4)
    return metrics, replies


def constrained_validity(em: EvalModel, inp: Inputs, set_name: str, items: list[EvalItem], folder: Path
                         ) -> tuple[dict, dict]:
    """Schema validity of a set's schema items generated again, each decoding constrained to its schema (eval.
    constrained_schema); writes <set>.constrained.jsonl beside the free replies. Returns (rate, generation stats)."""
    from ..generate.constrain import GrammarError

    gen, items = inp.cfg.generation, [it for it in items if it.schema is not None]
    inp.log(f"{em.label}: generating {len(items)} schema-constrained replies for {set_name}")
    try:
        outputs, stats = generate(em.model, em.renderer, [it.prompt for it in items],
                                  max_new_tokens=gen.max_new_tokens, batch_size=gen.batch_size,
                                  do_sample=gen.do_sample, temperature=gen.temperature, top_p=gen.top_p,
                                  seed=gen.seed, schemas=[it.schema for it in items],
                                  progress=inp.progress(f"{em.label} {set_name} constrained", len(items))
                                  if inp.progress else None)
    except GrammarError as e:
        names, why = sorted({str(it.schema_name) for it in items}), " ".join(str(e).split())
        raise ConfigError("eval", [f"constrained_schema: a schema of set {set_name!r} ({', '.join(names)}) cannot "
                                   f"be enforced: {why}; fix: simplify that schema, or set eval.constrained_schema: "
                                   "false"]) from None
    checks = [schema_valid(o.text, it.schema) for it, o in zip(items, outputs)]
    write_jsonl(folder / f"{set_name}.constrained.jsonl", [
        {"id": it.id, "category": it.category, "output": o.text, "new_tokens": o.new_tokens, "finish": o.finish,
         "schema": it.schema_name, "schema_valid": ok, "schema_error": error}
        for it, o, (ok, error) in zip(items, outputs, checks)])
    stats_dict = {**stats.to_dict(), "finished_by_length": sum(o.finish == "length" for o in outputs)}
    return validity([ok for ok, _ in checks]), stats_dict


def compare(label: str, cand: dict, cand_replies: dict[str, list[str]], base: dict,
            base_replies: dict[str, list[str]], inp: Inputs, human: dict[str, dict]) -> dict:
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


def judge_client(cfg: EvalConfig) -> ChatClient:
    """The judge client that eval.judge describes (the API key from the named environment variable)."""
    j = cfg.judge
    return ChatClient(j.url, j.model, api_key(j.api_key_env), j.timeout_s, j.retries, j.max_tokens,
                      name="judge endpoint", fix="start the server or set eval.judge.url / eval.judge.model (any "
                      "OpenAI-compatible API)")


def select_best(comparisons: dict[str, dict], weights: dict[str, float]) -> tuple[str, str, dict[str, float | None]]:
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


def human_for(cfg: EvalConfig, run_dir: Path) -> dict[str, dict]:
    if not cfg.human:
        return {}
    ratings = load_human(cfg.human, cfg.human_scale)
    if run_dir.name in ratings and "final" not in ratings:
        ratings["final"] = ratings[run_dir.name]  # the run's own name stands for its final weights
    return ratings
