"""Checks that the run trains and serves one template: parity proof, template sha256 everywhere, the end-of-turn
token trained and in generation_config's eos, BOS written once; plus the export folders that serving reads."""

from __future__ import annotations

from ..errors import SftpipeError
from .base import Outcome, check, fail, no_run, ok, skip, warn, worst
from ..runs import template_sha256
from .bundles import bundle_template, eos_ids, export_folders
from .context import Context


@check("template-parity")
def template_parity(ctx: Context) -> Outcome:
    """Checklist: "Normalize conversations through the exact chat template used at inference."

    parity.json shows 0 text/token mismatches, and the template sha256 is the same in the config, run.json,
    parity.json, the saved tokenizer and every export."""
    info = ctx.info
    if info is None:
        return no_run(ctx)
    parity = ctx.run_file("parity.json")
    if parity is None:
        return fail(f"{ctx.run_dir}/parity.json is missing", "re-run `sftpipe train` (it writes the parity proof)")
    found = []
    bad = (parity.get("text_mismatches"), parity.get("token_mismatches"))
    if bad != (0, 0):
        found.append(fail(f"{ctx.run_dir}/parity.json: {bad[0]} text / {bad[1]} token mismatches (first: "
                          f"{parity.get('first_mismatch')})", "fix the template so apply_chat_template renders "
                                                               "what training saw; re-train"))
    saved = (ctx.run_file("tokenizer_config.json") or {}).get("chat_template")
    shas = {"run.json": info.template.sha256 if info.template else None,
            "parity.json": parity.get("template_sha256"), "tokenizer_config.json": template_sha256(saved)}
    try:
        from ..models import load_tokenizer
        from ..templates import load_template

        spec = ctx.cfg.template.name
        shas[f"config ({spec})"] = load_template(spec, load_tokenizer(ctx.cfg.model.tokenizer or ctx.cfg.model.name)
                                                 ).sha256
    except Exception as e:  # a config that no longer resolves is evidence, not a crash
        shas[f"config ({ctx.cfg.template.name})"] = f"unresolvable: {e}"
    for folder in export_folders(ctx):
        shas[str(folder)] = bundle_template(folder)[0]
    ref = shas["run.json"]
    differ = {k: str(v)[:12] for k, v in shas.items() if v != ref}
    if differ:
        found.append(fail(f"template sha256 differs from run.json's {str(ref)[:12]}: "
                          + ", ".join(f"{k} {v}" for k, v in differ.items()),
                          "serve with the run's own tokenizer (its tokenizer_config.json template), or re-train "
                          "with the template you serve"))
    return worst(ok(f"{parity.get('examples_checked')} examples: 0 mismatches; template sha256 {str(ref)[:12]} in "
                    + ", ".join(shas)), *found)


@check("end-of-turn")
def end_of_turn(ctx: Context) -> Outcome:
    """Pitfall: "Template mismatch — Different special tokens at train vs serve is the most common silent SFT
    failure mode."

    Every trained reply trains its end-of-turn token, and generation_config.json's eos includes it, so the served
    model stops where training taught it to."""
    info = ctx.info
    if info is None:
        return no_run(ctx)
    eot = list(info.template.end_of_turn_ids) if info.template else []
    if not eot:
        return fail(f"{ctx.run_dir}/run.json records no end-of-turn token ids", "re-train with a template whose "
                                                                                  "replies end in a control token")
    names = ctx.tokenizer.convert_ids_to_tokens(eot)
    mr = info.mask_report
    found = [ok(f"end-of-turn {names} trained in {mr.get('eot_trained')}/{mr.get('trained_messages')} replies; "
                f"in generation_config eos")]
    if mr.get("eot_trained") != mr.get("trained_messages"):
        found.append(warn(f"{mr.get('trained_messages', 0) - mr.get('eot_trained', 0)} trained replies lost their "
                          f"end-of-turn token (truncation {mr.get('truncation_policy')})",
                          "use render.truncation drop_oldest_turns or a larger render.max_length"))
    missing = set(eot) - eos_ids(ctx.run_file("generation_config.json"))
    if missing:
        found.append(fail(f"{ctx.run_dir}/generation_config.json eos_token_id lacks {sorted(missing)}",
                          "re-run `sftpipe train` (it writes eos = end-of-turn ids + the tokenizer's eos)"))
    return worst(*found)


@check("bos-once")
def bos_once(ctx: Context) -> Outcome:
    """Pitfall: "Wrong tokenizer assumptions" — a template that writes BOS plus a tokenizer that adds one doubles it.

    The run's template renders at most one BOS, and tokenizing its rendered text the way a server does
    (add_special_tokens=True) does not add a second."""
    if ctx.info is None and not ctx.train:
        return skip("no run and no training data to render")
    try:
        tok = ctx.tokenizer
    except SftpipeError as e:
        return skip(f"no tokenizer to load ({e})")
    if tok.bos_token_id is None:
        return ok("the tokenizer has no BOS token")
    msgs = (ctx.train[0].to_template() if ctx.train else
            [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}])
    ids = list(tok.apply_chat_template(msgs, tokenize=True, return_dict=False))
    text = tok.apply_chat_template(msgs, tokenize=False)
    served = tok(text)["input_ids"]
    lead = lambda xs: next((i for i, x in enumerate(xs) if x != tok.bos_token_id), len(xs))
    if lead(ids) > 1:
        return fail(f"the template renders {lead(ids)} BOS tokens ({tok.bos_token!r}) at the start",
                    "remove the extra {{ bos_token }} from the template")
    if lead(served) > 1:
        return warn(f"the template writes {tok.bos_token!r} and the tokenizer adds another: tokenizing the "
                    "rendered prompt with add_special_tokens=True doubles BOS",
                    "serve through apply_chat_template, or tokenize rendered prompts with add_special_tokens=False")
    return ok(f"BOS {tok.bos_token!r}: {lead(ids)} from the template, {lead(served)} after server tokenization")
