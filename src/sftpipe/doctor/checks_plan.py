"""Checks on what the project decided before training: target behaviours, base checkpoint, masking policy, LoRA
shape and learning rate, the system prompt, general-data mix, refusal examples and synthetic-data audit."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from pathlib import Path

from .base import Outcome, check, fail, ok, skip, warn, worst
from .context import Context, read_json
from .text import is_refusal, record_label

SMALL_BUDGET, LARGE_BUDGET = 10_000, 100_000  # demonstrations; the guide's SFT row: 1k-100k demos
LORA_LR, FULL_LR = (1e-4, 3e-4), (1e-5, 2e-5)
LORA_RANK, ALPHA_RATIO, WARMUP = (16, 64), (1.5, 2.5), (0.03, 0.10)
SYSTEM_PROMPT_TOKENS = 400  # Harbor kept its live system prompt under 400 tokens
MIX_RANGE = (0.10, 0.30)
NO_DATA = "no training data (data.train is empty or missing)"
INSTRUCT = re.compile(r"instruct|chat|(^|[-_/])it($|[-_/])|sft|dpo", re.IGNORECASE)
REFUSAL_SETS = re.compile(r"red.?team|complian|refus|safety|harm|jailbreak", re.IGNORECASE)
SYNTHETIC_VALUES = {"synthetic", "teacher", "generated", "self-instruct", "self_instruct", "llm"}


def named_checks(eval_section: dict) -> list[str]:
    """The behaviour checks an `eval:` section names (schema, expected fields, rules/policy, judge, human).

    >>> named_checks({"sets": [{"name": "a", "schema_name": "s"}], "policy": "auto", "judge": {"enabled": True}})
    ['schema (a)', 'judge']
    """
    sets = eval_section.get("sets") or []
    out = []
    with_schema = [s["name"] for s in sets if s.get("schema_name") or s.get("schema")]
    if with_schema:
        out.append(f"schema ({', '.join(with_schema)})")
    if any(s.get("expected") for s in sets):
        out.append("expected fields")
    if eval_section.get("rules") or eval_section.get("policy") not in (None, "auto"):
        out.append(f"policy rules ({eval_section.get('rules') or eval_section.get('policy')})")
    if (eval_section.get("judge") or {}).get("enabled"):
        out.append("judge")
    if eval_section.get("human"):
        out.append("human ratings")
    return out


@check("target-behaviours")
def target_behaviours(ctx: Context) -> Outcome:
    """Checklist: "Define target behaviors (format, tone, tools, refusals) before collecting data."

    The config's eval section must name checks (schema, rules/policy, judge, human ratings), and the run's own
    config must already have named them when it trained."""
    now = named_checks(ctx.cfg.eval.model_dump(mode="json"))
    if not now:
        return fail(f"{ctx.where}: eval names no behaviour checks (no set with schema/expected, no eval.rules or "
                    "eval.policy, judge off, no human ratings)",
                    "before training, add eval.sets with schema/expected fields, eval.rules (or eval.policy) "
                    "and/or eval.judge: the format, tone and refusals you want")
    info = ctx.info
    if info is not None and info.config.get("eval") is not None and not named_checks(info.section("eval")):
        return warn(f"defined after training: {ctx.run_dir}/run.json's config named none; the config now names "
                    f"{', '.join(now)}", "re-train with these checks in the config so the run records its target")
    return ok(f"eval names {', '.join(now)}")


def _is_instruct(ctx: Context) -> tuple[bool, str]:
    from ..models import resolve_model

    name = ctx.info.base_model if ctx.info else ctx.cfg.model.name
    if INSTRUCT.search(Path(str(name)).name):
        return True, f"{name} (instruct/chat by name)"
    try:
        folder = Path(resolve_model(str(name)))
    except Exception:  # an unresolvable reference: judged by name only
        return False, f"{name} (no instruct/chat in its name)"
    for meta in (read_json(folder / "config.json") or {}, read_json(folder / "tokenizer_config.json") or {}):
        ref = str(meta.get("_name_or_path") or meta.get("name_or_path") or "")
        if INSTRUCT.search(Path(ref).name):
            return True, f"{name} (from {Path(ref).name})"
    if (read_json(folder / "tokenizer_config.json") or {}).get("chat_template") or (folder / "chat_template.jinja"
                                                                                         ).is_file():
        return True, f"{name} (ships a chat template: instruct-style)"
    return False, f"{name} (raw base: no instruct/chat name, no chat template)"


@check("base-checkpoint")
def base_checkpoint(ctx: Context) -> Outcome:
    """Checklist: "Choose base checkpoint (raw vs instruct) based on demonstration budget."

    An instruct base needs fewer demonstrations (Harbor: Mistral-7B-Instruct on 18k); a raw base learns chat roles
    from scratch and needs a large budget. Warns on a mismatch."""
    n = (ctx.info.mask_report.get("conversations_kept") if ctx.info and ctx.info.mask_report else None) \
        or len(ctx.train)
    if not n:
        return skip(NO_DATA)
    instruct, why = _is_instruct(ctx)
    if not instruct and n < SMALL_BUDGET:
        return warn(f"{why} with {n:,} demonstrations (< {SMALL_BUDGET:,})",
                    "start from the instruct variant: it already knows chat roles, so a small budget goes to your "
                    "behaviours; or collect a much larger demonstration set")
    if instruct and n > LARGE_BUDGET:
        return warn(f"{why} with {n:,} demonstrations (> {LARGE_BUDGET:,})",
                    "a budget this large can teach a raw base its roles without the instruct model's inherited "
                    "style and refusals; compare both")
    return ok(f"{why}, {n:,} demonstrations")


@check("multi-turn-policy")
def multi_turn_policy(ctx: Context) -> Outcome:
    """Checklist: "Mask loss on user and system tokens; decide multi-turn assistant masking policy."

    render.train_on (all_assistant | last_assistant) must be set on purpose when the data has multi-turn dialogs;
    the run's policy is reported."""
    policy = ctx.info.section("render").get("train_on") if ctx.info else ctx.cfg.render.train_on
    if not ctx.train and not ctx.explicit("render.train_on"):
        return skip(NO_DATA)
    multi = [c for c in ctx.train if sum(m.role == "assistant" for m in c.messages) > 1]
    mr = ctx.info.mask_report if ctx.info else {}
    per = (f"; {mr['trained_messages'] / mr['examples']:.2f} trained replies per example"
           if mr.get("examples") else "")
    said = f"render.train_on={policy} ({'set in ' + ctx.where if ctx.explicit('render.train_on') else 'default'})"
    found = f"{said}; {len(multi)}/{len(ctx.train)} training conversations have several assistant turns{per}"
    if not ctx.train:
        return ok(f"{said}; no training data yet to count multi-turn dialogs in")
    if ctx.info and policy != ctx.cfg.render.train_on:
        return warn(f"the run trained with train_on={policy}, the config now says {ctx.cfg.render.train_on}",
                    "re-train, or restore render.train_on to the run's value")
    if multi and not ctx.explicit("render.train_on"):
        return warn(found, "set render.train_on explicitly: all_assistant (the guide's choice for support bots and "
                           "agents: it teaches clarifying questions) or last_assistant")
    return ok(found)


@check("lora-first")
def lora_first(ctx: Context) -> Outcome:
    """Checklist: "Start with LoRA/QLoRA; full fine-tune only when adapters plateau."

    Also the guide's hyperparameter ranges: lr 1e-4 to 3e-4 (LoRA) or 1e-5 to 2e-5 (full), rank 16-64, alpha about
    2x rank, 3-10% warmup. Epochs are judged by `overfitting`."""
    cfg = ctx.info.config if ctx.info else ctx.cfg.model_dump(mode="json")
    mode = ctx.info.mode if ctx.info else ctx.cfg.train.mode
    t, lora = cfg.get("train") or {}, cfg.get("lora") or {}
    lr = (ctx.info.learning_rate if ctx.info else None) or t.get("lr") or (2e-4 if mode != "full" else 2e-5)
    found = [ok(f"mode {mode}, lr {lr:g}")]
    if mode == "full":
        found.append(warn("train.mode=full", "start with LoRA/QLoRA (train.mode: lora); fine-tune all weights only "
                                             "once adapters plateau: cheaper, and less forgetting"))
    lo, hi = FULL_LR if mode == "full" else LORA_LR
    if not lo <= lr <= hi:
        found.append(warn(f"lr {lr:g} outside the guide's {mode} range {lo:g}-{hi:g}",
                          f"set train.lr within {lo:g}-{hi:g} (the guide's range for {mode} on 7B-13B models), "
                          "or keep it and record why (e.g. a small model, a short run)"))
    if mode != "full":
        r = lora.get("r") or 16
        alpha = lora.get("alpha") or 2 * r
        found[0] = ok(f"mode {mode}, lr {lr:g}, rank {r}, alpha {alpha:g}")
        if not LORA_RANK[0] <= r <= LORA_RANK[1]:
            found.append(warn(f"rank {r} outside 16-64", "set lora.r between 16 and 64 (the guide's range)"))
        if not ALPHA_RATIO[0] <= alpha / r <= ALPHA_RATIO[1]:
            found.append(warn(f"alpha {alpha:g} = {alpha / r:.2g}x rank",
                              f"set lora.alpha about 2x rank ({2 * r}; the guide: alpha typically 2x rank)"))
    wr = t.get("warmup_ratio", 0)
    if not WARMUP[0] <= wr <= WARMUP[1]:
        found.append(warn(f"warmup_ratio {wr:g} outside 3-10%",
                          "set train.warmup_ratio between 0.03 and 0.10 (the guide: cosine decay with 3-10% warmup)"))
    return worst(*found)


@check("system-prompt")
def system_prompt(ctx: Context) -> Outcome:
    """Checklist: "Version control system prompts separately; shrink prompts as behaviors move into weights."

    One stable system prompt (per-example prompts dilute learning), under 400 tokens (Harbor's live prompt), and
    its sha256 reported so the serving copy can be matched against it."""
    if not ctx.train:
        return skip(NO_DATA)
    prompts = Counter(c.messages[0].content for c in ctx.train if c.messages and c.messages[0].role == "system")
    if not prompts:
        return ok("no system prompt in the training data: behaviours live in the demonstrations")
    top, count = prompts.most_common(1)[0]
    sha = hashlib.sha256(top.encode("utf-8")).hexdigest()[:12]
    try:
        tokens = len(ctx.tokenizer(top, add_special_tokens=False)["input_ids"])
    except Exception:  # no tokenizer to load (e.g. weights not downloaded): the usual 4 characters per token
        tokens = -(-len(top) // 4)
    found = [ok(f"{len(prompts)} distinct system prompt(s); the main one ({count}/{len(ctx.train)} conversations) "
                f"is {tokens} tokens, sha256 {sha}")]
    if tokens > SYSTEM_PROMPT_TOKENS:
        found.append(warn(f"system prompt sha256 {sha} is {tokens} tokens (> {SYSTEM_PROMPT_TOKENS})",
                          "move behaviours into demonstrations and shrink the prompt under 400 tokens (Harbor cut "
                          "a 2,400-token prompt)"))
    if len(prompts) > 1:
        odd = [record_label(c, i) for i, c in enumerate(ctx.train)
               if c.messages and c.messages[0].role == "system" and c.messages[0].content != top][:5]
        found.append(warn(f"{len(prompts)} distinct system prompts; {sum(prompts.values()) - count} conversations "
                          f"differ from the main one (e.g. {', '.join(odd)})",
                          "use one stable system prompt across the dataset, kept in its own versioned file"))
    serve = ctx.section("serve").get("system_prompt")
    if isinstance(serve, str) and serve != top:
        found.append(warn("serve.system_prompt differs from the training system prompt",
                          f"serve the prompt the model was trained with (sha256 {sha})"))
    return worst(*found)


@check("general-mix")
def general_mix(ctx: Context) -> Outcome:
    """Pitfall: "Skipping mixed general data — ... blend 10–30% broad instruction data ... when specializing."

    The share of training records the curate mix stage blended in (their `mix` field), or its report."""
    if not ctx.train:
        return skip(NO_DATA)
    label = ctx.cfg.curate.mix.label
    n_mix = sum(1 for c in ctx.train if c.meta.get("mix") == label)
    share = n_mix / len(ctx.train)
    found = f"{n_mix}/{len(ctx.train)} training records are general data ({share:.1%}, label {label!r})"
    lo, hi = MIX_RANGE
    if n_mix == 0:
        return warn(found, "narrow SFT collapses general ability: enable curate.mix with a general instruction "
                           "source (Alpaca, filtered ShareGPT) at ratio 0.1-0.3")
    if not lo <= share <= hi:
        return warn(found + f" (outside {lo:.0%}-{hi:.0%})", "set curate.mix.ratio between 0.1 and 0.3 and give a "
                                                             "source large enough for it")
    return ok(found)


@check("refusals")
def refusals(ctx: Context) -> Outcome:
    """Pitfall: "Confusing SFT with safety — ... add explicit refusal examples and follow with preference learning."

    When the eval names refusal behaviours (red-team, compliance, safety sets), the training replies must include
    refusals."""
    names = [s.name for s in ctx.cfg.eval.sets if REFUSAL_SETS.search(f"{s.name} {s.path}")]
    if not names:
        return skip("the eval names no refusal behaviour (no red-team / compliance / safety set)")
    if not ctx.train:
        return skip(NO_DATA)
    replies = [(i, m.content) for i, c in enumerate(ctx.train) for m in c.messages if m.role == "assistant"]
    hits = [i for i, text in replies if is_refusal(text)]
    found = f"eval sets {', '.join(names)} test refusals; {len(hits)}/{len(replies)} training replies refuse"
    if not hits:
        return warn(found, "add explicit refusal demonstrations (decline + safe alternative) for the red-team "
                           "cases, then follow with preference learning")
    ex = ", ".join(dict.fromkeys(record_label(ctx.train[i], i) for i in hits[:3]))
    return ok(f"{found} (e.g. {ex})")


@check("synthetic-audited")
def synthetic_audited(ctx: Context) -> Outcome:
    """Pitfall: "All synthetic, no human audit — Teacher-model errors compound; always human-review high-risk
    domains."

    Records marked synthetic (a truthy `synthetic` field, or source/origin synthetic/teacher/generated) need a
    judge filter (curate.quality.judge) or human review (eval.human ratings)."""
    def synthetic(meta: dict) -> bool:
        return bool(meta.get("synthetic")) or any(str(meta.get(k, "")).lower() in SYNTHETIC_VALUES
                                                  for k in ("source", "origin"))
    if not ctx.train:
        return skip(NO_DATA)
    marked = [i for i, c in enumerate(ctx.train) if synthetic(c.meta)]
    if not marked:
        return ok(f"no training record is marked synthetic ({len(ctx.train)} checked: fields synthetic, source, "
                  "origin)")
    report_cfg = (ctx.curated[1] or {}).get("config") or ctx.cfg.curate.model_dump(mode="json")
    judged = bool(((report_cfg.get("quality") or {}).get("judge") or {}).get("enabled"))
    human = ctx.cfg.eval.human and Path(ctx.cfg.eval.human).is_file()
    found = (f"{len(marked)}/{len(ctx.train)} training records are synthetic (e.g. "
             f"{', '.join(record_label(ctx.train[i], i) for i in marked[:3])})")
    if judged or human:
        return ok(found + "; audited by " + " and ".join(x for x, on in (("a judge filter", judged),
                                                                         ("human ratings", human)) if on))
    return warn(found + "; no judge filter ran and no human ratings exist",
                "enable curate.quality.judge, or have people review a sample (eval.human), before training")
