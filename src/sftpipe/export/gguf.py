"""GGUF for llama.cpp, written by llama.cpp's own converter (`llamacpp`) from the merged run saved as an HF folder, so
every architecture it converts. The file is then checked: its template and eos / end-of-turn ids, and, read back with
transformers' GGUF loader, the token ids of test conversations and the logits against the merged model's."""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

from ..errors import ModelError
from ..io import write_json
from ..runs import RunInfo, check_template
from .bundle import end_of_turn_eos, write_hf
from .llamacpp import OUTTYPES, convert, set_end_of_turn, writer_name

DTYPES = tuple(OUTTYPES)
# max |logit difference| between the GGUF (read by transformers, computed in fp32) and the merged model with its
# weights as the file stores them (rounded to the dtype, q8_0 quantized and dequantized; computed in fp32): the file
# must add no error of its own, at every dtype (measured on the test run: 0.0 at fp32, fp16, bf16 and q8_0, where
# the unrounded model is 2.3e-4 away at fp16, 2.5e-3 at bf16 and 6.4e-3 at q8_0)
TOLERANCE = 1e-4
CHECK_CONVERSATIONS = [
    [{"role": "user", "content": "Where is my order 4411?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Refund <|im_end|> please"},
     {"role": "assistant", "content": "Sure."}, {"role": "user", "content": "When?"}],
]


def _as_stored(w, dtype: str):
    """The matrix `w` (fp32) as a `dtype` GGUF holds it: rounded, or q8_0 blocks of 32 along its rows (F16 where a
    row is not a multiple of 32: the converter's fallback)."""
    import torch

    if dtype == "q8_0":
        if w.shape[-1] % 32:
            return w.half().float()
        import gguf

        q8 = gguf.GGMLQuantizationType.Q8_0
        a = w.cpu().numpy()
        return torch.from_numpy(gguf.quants.dequantize(gguf.quants.quantize(a, q8), q8).reshape(a.shape))
    from .merged import torch_dtype

    return w.to(torch_dtype(dtype)).float()


def _reference(model, loaded, dtype: str) -> tuple[int, int]:
    """Give each weight of `model` the value the file holds for it, as `loaded` (the GGUF read back) shows: in `dtype`,
    or kept in f32 (vectors, norms, what llama.cpp keeps in f32) or F16; (weights matched exactly, weights)."""
    import torch

    state, matched, total = loaded.state_dict(), 0, 0
    with torch.no_grad():
        for name, p in model.named_parameters():
            full = p.data.float()
            options = [full] if p.ndim < 2 else [_as_stored(full, dtype), full, full.half().float()]
            g = state.get(name)
            hit = next((o for o in options if g is not None and g.shape == o.shape and torch.equal(g.float(), o)),
                       None)
            p.data = options[0] if hit is None else hit
            matched, total = matched + (hit is not None), total + 1
    return matched, total


def read_metadata(path: Path) -> dict:
    """The file's architecture, chat template, eos / end-of-turn ids and tensor types (counted), read with gguf-py."""
    import gguf

    reader = gguf.GGUFReader(path)

    def value(key: str):
        field = reader.get_field(key)
        return None if field is None else field.contents()

    return {"architecture": value(gguf.Keys.General.ARCHITECTURE),
            "chat_template": value(gguf.Keys.Tokenizer.CHAT_TEMPLATE),
            "eos_token_id": value(gguf.Keys.Tokenizer.EOS_ID), "eot_token_id": value(gguf.Keys.Tokenizer.EOT_ID),
            "tensor_types": dict(Counter(t.tensor_type.name for t in reader.tensors))}


def check_metadata(meta: dict, template: str, eos: list[int], eot: int) -> dict:
    """The metadata checks: the template is the run's, the eos is one of its stops, the end-of-turn id is its own."""
    return {"template_equal": meta["chat_template"] == template, "eos_in_stops": meta["eos_token_id"] in eos,
            "eot_equal": meta["eot_token_id"] == eot, "tensor_types": meta["tensor_types"]}


def read_back(folder: Path, filename: str, model, tokenizer, dtype: str) -> dict:
    """Load the GGUF with transformers and compare template, token ids and logits with the merged model; for an
    architecture transformers' loader does not read, a note saying so instead."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        g_tok = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
        g_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename, dtype=torch.float32).eval()
    except ValueError as e:
        if "not supported" not in str(e):
            raise ModelError(f"transformers could not read {filename} back ({e}); fix: export --format hf and "
                             "convert with llama.cpp's convert_hf_to_gguf.py") from e
        return {"read_back": f"not checked: transformers' GGUF loader says {e}"}
    kw = {"add_generation_prompt": True, "tokenize": True, "sanitize_control_tokens": True, "return_dict": False}
    pairs = [(list(tokenizer.apply_chat_template(m, **kw)), list(g_tok.apply_chat_template(m, **kw)))
             for m in CHECK_CONVERSATIONS]
    model = model.float().eval()
    with torch.inference_mode():
        full = [model(torch.tensor([ids])).logits for ids, _ in pairs]
    matched, total = _reference(model, g_model, dtype)
    worst = cost = 0.0
    with torch.inference_mode():
        for (ids, _), before in zip(pairs, full):
            file_logits = g_model(torch.tensor([ids])).logits
            worst = max(worst, float((model(torch.tensor([ids])).logits - file_logits).abs().max()))
            cost = max(cost, float((before - file_logits).abs().max()))
    return {"loader_template_equal": g_tok.chat_template == tokenizer.chat_template,
            "token_ids_equal": all(a == b for a, b in pairs), "max_abs_logit_diff": worst, "tolerance": TOLERANCE,
            "weights_as_stored": matched, "weights": total, "dtype_logit_diff": cost, "conversations": len(pairs)}


def _ok(check: dict) -> bool:
    flags = [check[k] for k in ("template_equal", "eos_in_stops", "eot_equal", "loader_template_equal",
                                "token_ids_equal") if k in check]
    return all(flags) and check.get("max_abs_logit_diff", 0.0) <= TOLERANCE


def write_gguf(folder: Path, model, tokenizer, run_dir: Path, info: RunInfo, *, dtype: str,
               checkpoint: str | None = None) -> dict:
    """`<name>-<dtype>.gguf` and export.json in `folder`, the file checked; ModelError when the check fails
    (TemplateError, before writing, when the tokenizer's template is not the one training used)."""
    if dtype not in DTYPES:
        raise ModelError(f"{dtype!r} is not a GGUF dtype; allowed: {', '.join(DTYPES)}; fix: pass one of them")
    check_template(run_dir, tokenizer, info)
    eos = end_of_turn_eos(run_dir, info, tokenizer)
    eot = (info.template.end_of_turn_ids or eos)[0] if info.template else eos[0]
    name = info.name or run_dir.name
    filename = f"{name}-{dtype}.gguf"
    with tempfile.TemporaryDirectory(dir=folder, prefix=".hf-") as staging:
        hf = Path(staging) / "hf"  # the hf bundle, in the model's own dtype (lossless), is the converter's input
        own = {"torch.float16": "fp16", "torch.bfloat16": "bf16"}.get(str(model.dtype), "fp32")
        write_hf(hf, model, tokenizer, run_dir, info, dtype=own, checkpoint=checkpoint)
        convert(hf, Path(staging) / filename, dtype, name)
        eot_added = set_end_of_turn(Path(staging) / filename, folder / filename, eot)
    meta = read_metadata(folder / filename)
    check = {**check_metadata(meta, tokenizer.chat_template, eos, eot),
             **read_back(folder, filename, model, tokenizer, dtype)}
    check["ok"] = _ok(check)
    if not check["ok"]:
        raise ModelError(f"the GGUF read back differs from the merged model ({check}); fix: export --format hf and "
                         "convert with llama.cpp's convert_hf_to_gguf.py")
    record = {"format": "gguf", "file": filename, "dtype": dtype, "run_dir": str(run_dir), "run": info.name,
              "checkpoint": checkpoint, "architecture": meta["architecture"], "eos_token_id": eos,
              "eot_token_id": eot, "eot_added": eot_added, "check": check, "writer": writer_name()}
    write_json(folder / "export.json", record)
    return record
