"""General-capability regression: IFEval strict accuracy and NLL on a general held-out set, per model, and their
deltas against the baseline (to catch catastrophic forgetting)."""

from __future__ import annotations

import math

from ..readers import read_conversations
from ..config.evaluate import GenerationConfig, RegressionConfig
from ..generate import generate
from .ifeval import IFEvalItem, evaluate_ifeval, load_ifeval
from .items import EvalItem
from .load import EvalModel
from .loss import heldout_loss


def ifeval_prompts(items: list[IFEvalItem]) -> list[list[dict]]:
    """One single-turn user prompt per IFEval item."""
    return [[{"role": "user", "content": it.prompt}] for it in items]


def run_ifeval(em: EvalModel, items: list[IFEvalItem], gen: GenerationConfig, max_new_tokens: int) -> tuple[dict, list]:
    """Generate with the model's serving template and score strictly; returns (scores, generations)."""
    outputs, stats = generate(em.model, em.renderer, ifeval_prompts(items), max_new_tokens=max_new_tokens,
                              batch_size=gen.batch_size, do_sample=gen.do_sample, temperature=gen.temperature,
                              top_p=gen.top_p, seed=gen.seed)
    scores = evaluate_ifeval(items, [o.text for o in outputs])
    scores["generation"] = stats.to_dict()
    return scores, outputs


def general_items(cfg: RegressionConfig) -> list[EvalItem]:
    """The general held-out conversations as loss-only items (category "general"); [] when none is configured."""
    if not cfg.general:
        return []
    convs = read_conversations(cfg.general, format=cfg.general_format).conversations[: cfg.general_limit]
    items = []
    for k, conv in enumerate(convs):
        last = max(i for i, m in enumerate(conv.messages) if m.role == "assistant")
        items.append(EvalItem(id=str(conv.meta.get("id", f"general:{k}")), set="general", category="general",
                              messages=list(conv.messages[:last]),
                              target=conv.messages[last].content))
    return items


def run_regression(em: EvalModel, cfg: RegressionConfig, gen: GenerationConfig, general: list[EvalItem], *,
                   max_length: int, tokens_per_batch: int) -> tuple[dict, list]:
    """IFEval scores and general NLL of one model; returns (metrics, IFEval generations as rows)."""
    out: dict = {}
    rows: list[dict] = []
    if cfg.ifeval:
        items = load_ifeval(cfg.ifeval_subset)
        out["ifeval"], outputs = run_ifeval(em, items, gen, cfg.ifeval_max_new_tokens)
        rows = [{"key": it.key, "prompt": it.prompt, "output": o.text, "new_tokens": o.new_tokens,
                 "finish": o.finish} for it, o in zip(items, outputs)]
    if general:
        loss = heldout_loss(em.model, em.renderer, general, {"general": 1}, max_length=max_length,
                            tokens_per_batch=tokens_per_batch)
        out["general_nll"] = loss["overall"] if loss else None
    return out, rows


def deltas(candidate: dict, baseline: dict) -> dict:
    """Candidate minus baseline for IFEval accuracies and general NLL, plus general_retention.

    general_retention = min(1, exp(baseline NLL - candidate NLL)): 1 means no worse than the baseline.

    >>> d = deltas({"general_nll": {"loss": 2.0}}, {"general_nll": {"loss": 1.5}})
    >>> d["general_nll"], round(d["general_retention"], 4)
    (0.5, 0.6065)
    """
    out: dict = {}
    ci, bi = candidate.get("ifeval"), baseline.get("ifeval")
    if ci and bi:
        for k in ("prompt_level_strict", "instruction_level_strict"):
            out[f"ifeval_{k}"] = round(ci[k] - bi[k], 4)
    cg, bg = candidate.get("general_nll"), baseline.get("general_nll")
    if cg and bg:
        out["general_nll"] = round(cg["loss"] - bg["loss"], 6)
        out["general_retention"] = min(1.0, math.exp(bg["loss"] - cg["loss"]))
    return out
