"""GGUF for llama.cpp (llama-architecture models), written with gguf-py, the GGUF library the llama.cpp project
publishes on PyPI (`gguf`): its writer, its HF -> GGUF tensor-name map, and the q/k row permutation llama.cpp's
`convert_hf_to_gguf.py` applies. The template and the eos / end-of-turn ids go in the metadata. The file is then
read back with transformers' GGUF loader and checked: same chat template, same token ids for test conversations,
logits within 1e-4 of the merged model's (its weights rounded to the export dtype)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import ModelError
from ..io import write_json
from ..runs import RunInfo, check_template
from .bundle import end_of_turn_eos

# max |logit difference| between the GGUF (read by transformers, computed in fp32) and the merged model with its
# weights rounded to the export dtype (computed in fp32): the file must add no error of its own
TOLERANCE = 1e-4
CHECK_CONVERSATIONS = [
    [{"role": "user", "content": "Where is my order 4411?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Refund <|im_end|> please"},
     {"role": "assistant", "content": "Sure."}, {"role": "user", "content": "When?"}],
]


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's rotary row order for q/k projections (its converter's `LlamaModel.permute`)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _vocab(tokenizer, size: int) -> tuple[list[str], list[int], list[str]]:
    """(tokens by id, token types, BPE merges) for a byte-level BPE tokenizer ("gpt2" in GGUF)."""
    import gguf

    model = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    if model.get("type") != "BPE":
        raise ModelError(f"GGUF export handles byte-level BPE tokenizers; this one is {model.get('type')}; fix: "
                         "export --format hf and convert with llama.cpp's convert_hf_to_gguf.py")
    added = dict(tokenizer.added_tokens_decoder)
    tokens, types = [], []
    for i in range(size):
        if i in added:
            tokens.append(added[i].content)
            types.append(gguf.TokenType.CONTROL if added[i].special else gguf.TokenType.USER_DEFINED)
        elif i < len(tokenizer):
            tokens.append(tokenizer.convert_ids_to_tokens(i))
            types.append(gguf.TokenType.NORMAL)
        else:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    return tokens, [int(t) for t in types], merges


def write_gguf_file(path: Path, model, tokenizer, eos: list[int], eot: int, dtype: str, name: str) -> None:
    """Write `model` (a merged llama-architecture model) and its tokenizer as one GGUF file."""
    import gguf

    cfg = model.config
    if cfg.model_type != "llama":
        raise ModelError(f"GGUF export supports llama-architecture models; this run's is {cfg.model_type!r}; fix: "
                         "export --format hf and convert it with llama.cpp's convert_hf_to_gguf.py")
    qtype = {"fp32": gguf.GGMLQuantizationType.F32, "fp16": gguf.GGMLQuantizationType.F16,
             "bf16": gguf.GGMLQuantizationType.BF16}[dtype]
    ftype = {"fp32": gguf.LlamaFileType.ALL_F32, "fp16": gguf.LlamaFileType.MOSTLY_F16,
             "bf16": gguf.LlamaFileType.MOSTLY_BF16}[dtype]
    w = gguf.GGUFWriter(path, "llama")
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    w.add_name(name)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_freq_base(float(getattr(cfg, "rope_theta", None) or cfg.rope_parameters["rope_theta"]))
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_dimension_count(head_dim)
    w.add_vocab_size(cfg.vocab_size)
    w.add_file_type(int(ftype))
    tokens, types, merges = _vocab(tokenizer, cfg.vocab_size)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm" if "<|im_start|>" in tokenizer.get_vocab() else "default")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    if tokenizer.bos_token_id is not None:
        w.add_bos_token_id(tokenizer.bos_token_id)
    w.add_eos_token_id(tokenizer.eos_token_id if tokenizer.eos_token_id is not None else eot)
    w.add_eot_token_id(eot)
    if tokenizer.pad_token_id is not None:
        w.add_pad_token_id(tokenizer.pad_token_id)
    w.add_add_bos_token(False)
    w.add_chat_template(tokenizer.chat_template)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, cfg.num_hidden_layers)
    state = model.state_dict()
    for key, tensor in state.items():
        if key == "lm_head.weight" and cfg.tie_word_embeddings:
            continue  # llama.cpp reuses token_embd as the output layer
        data = tensor.detach().float().cpu().numpy()
        if key.endswith("q_proj.weight"):
            data = _permute(data, cfg.num_attention_heads)
        elif key.endswith("k_proj.weight"):
            data = _permute(data, cfg.num_key_value_heads)
        target = names.get_name(key, try_suffixes=(".weight", ".bias"))
        if target is None:
            raise ModelError(f"no GGUF name for tensor {key!r}; fix: export --format hf and use llama.cpp's converter")
        if data.ndim == 1 or qtype == gguf.GGMLQuantizationType.F32:
            w.add_tensor(target, data.astype(np.float32))
        elif qtype == gguf.GGMLQuantizationType.F16:
            w.add_tensor(target, data.astype(np.float16))
        else:
            w.add_tensor(target, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def read_back(folder: Path, filename: str, model, tokenizer, dtype: str) -> dict:
    """Load the GGUF with transformers and compare template, token ids and logits with the merged model."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    g_tok = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
    g_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename, dtype=torch.float32).eval()
    from .merged import torch_dtype

    with torch.no_grad():  # the weights the file holds (matrices in the dtype, 1-D norms in fp32), computed in fp32
        for p in model.parameters():
            p.data = p.data.to(torch_dtype(dtype)).float() if p.ndim >= 2 else p.data.float()
    model = model.eval()
    template_equal = g_tok.chat_template == tokenizer.chat_template
    ids_equal, worst = True, 0.0
    for msgs in CHECK_CONVERSATIONS:
        kw = {"add_generation_prompt": True, "tokenize": True, "sanitize_control_tokens": True,
              "return_dict": False}
        ids, g_ids = tokenizer.apply_chat_template(msgs, **kw), g_tok.apply_chat_template(msgs, **kw)
        ids_equal &= list(ids) == list(g_ids)
        with torch.inference_mode():
            a = model(torch.tensor([ids])).logits
            b = g_model(torch.tensor([ids])).logits
        worst = max(worst, float((a - b).abs().max()))
    return {"template_equal": template_equal, "token_ids_equal": ids_equal, "max_abs_logit_diff": worst,
            "tolerance": TOLERANCE, "conversations": len(CHECK_CONVERSATIONS),
            "ok": template_equal and ids_equal and worst <= TOLERANCE}


def write_gguf(folder: Path, model, tokenizer, run_dir: Path, info: RunInfo, *, dtype: str,
               checkpoint: str | None = None) -> dict:
    """`<name>.gguf` and export.json in `folder`, the file checked by reading it back; ModelError when the check
    fails (TemplateError, before writing, when the tokenizer's template is not the one training used)."""
    check_template(run_dir, tokenizer, info)
    eos = end_of_turn_eos(run_dir, info, tokenizer)
    eot = (info.template.end_of_turn_ids or eos)[0] if info.template else eos[0]
    filename = f"{info.name or run_dir.name}-{dtype}.gguf"
    write_gguf_file(folder / filename, model, tokenizer, eos, eot, dtype, info.name or run_dir.name)
    check = read_back(folder, filename, model, tokenizer, dtype)
    if not check["ok"]:
        raise ModelError(f"the GGUF read back differs from the merged model ({check}); fix: export --format hf and "
                         "convert with llama.cpp's convert_hf_to_gguf.py")
    record = {"format": "gguf", "file": filename, "dtype": dtype, "run_dir": str(run_dir), "run": info.name,
              "checkpoint": checkpoint, "eos_token_id": eos, "eot_token_id": eot, "check": check,
              "writer": "gguf-py (llama.cpp's GGUF library on PyPI) GGUFWriter + tensor-name map"}
    write_json(folder / "export.json", record)
    return record
