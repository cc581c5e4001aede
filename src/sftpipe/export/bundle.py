"""Deployment bundles of a run: `hf` (merged safetensors in a chosen dtype, the tokenizer with the exact template
inline, a generation config whose eos holds every end-of-turn id, the model card) and `vllm` (the same plus a
README with the launch command that pins the template and the generation config)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from ..errors import TemplateError
from ..io import atomic_write_text, write_json
from ..runs import RunInfo, check_template
from .merged import save_model, torch_dtype


def end_of_turn_eos(run_dir: Path, info: RunInfo, tokenizer) -> list[int]:
    """Every id generation must stop on: the template's end-of-turn ids, the run's generation-config eos, eos."""
    ids = set(info.template.end_of_turn_ids if info.template else [])
    gen_file = run_dir / "generation_config.json"
    if gen_file.is_file():
        eos = json.loads(gen_file.read_text(encoding="utf-8")).get("eos_token_id")
        ids |= set(eos if isinstance(eos, list) else [eos] if isinstance(eos, int) else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    if not ids:
        raise TemplateError(f"{run_dir}: no end-of-turn or eos id is known, so a server could not stop; fix: re-run "
                            "`sftpipe train` with this sftpipe")
    return sorted(ids)


def _generation_config(run_dir: Path, eos: list[int], pad: int | None) -> dict:
    config = {}
    if (run_dir / "generation_config.json").is_file():
        config = json.loads((run_dir / "generation_config.json").read_text(encoding="utf-8"))
    config.update({"eos_token_id": eos[0] if len(eos) == 1 else eos})
    if pad is not None:
        config["pad_token_id"] = pad
    return config


def _card(run_dir: Path, info: RunInfo, fmt: str, dtype: str, sha: str) -> str:
    card = (run_dir / "README.md").read_text(encoding="utf-8") if (run_dir / "README.md").is_file() else \
        f"# {info.name}\n"
    return card.rstrip("\n") + "\n\n" + "\n".join([
        "## Export", "",
        f"Exported by `sftpipe export --format {fmt} --dtype {dtype}` from run `{info.name}`: the adapter folded "
        f"into the base weights (safetensors, {dtype}). The chat template (sha256 `{sha}`) is inline in "
        "`tokenizer_config.json`; `generation_config.json` stops on every end-of-turn id.", "",
        "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "model = AutoModelForCausalLM.from_pretrained(BUNDLE_DIR)",
        "tokenizer = AutoTokenizer.from_pretrained(BUNDLE_DIR)", "```", ""])


def write_hf(folder: Path, model, tokenizer, run_dir: Path, info: RunInfo, *, dtype: str, fmt: str = "hf",
             checkpoint: str | None = None) -> dict:
    """Write the hf bundle into `folder` (an empty staging folder); returns export.json's contents."""
    sha = check_template(run_dir, tokenizer, info)  # the template training used, before any weights are written
    parameters = save_model(model, tokenizer, folder, torch_dtype(dtype))
    eos = end_of_turn_eos(run_dir, info, tokenizer)
    write_json(folder / "generation_config.json", _generation_config(run_dir, eos, tokenizer.pad_token_id))
    atomic_write_text(folder / "README.md", _card(run_dir, info, fmt, dtype, sha))
    record = {"format": fmt, "dtype": dtype, "run_dir": str(run_dir), "run": info.name, "checkpoint": checkpoint,
              "base_model": info.base_model, "parameters": parameters, "template_sha256": sha,
              "eos_token_id": eos}
    write_json(folder / "export.json", record)
    return record


def vllm_readme(name: str, sha: str) -> str:
    """The bundle's README: how to serve it with vLLM with the trained template and stops."""
    launch = ("vllm serve BUNDLE_DIR --served-model-name " + shlex.quote(name) + " --chat-template "
              "BUNDLE_DIR/chat_template.jinja --generation-config BUNDLE_DIR --dtype auto")
    return "\n".join([
        f"# {name} for vLLM", "",
        "Launch (replace BUNDLE_DIR with this folder's path):", "", "```bash", launch, "```", "",
        f"`chat_template.jinja` is the exact template the model was trained with (sha256 `{sha}`, the same text "
        "as in tokenizer_config.json), and `--generation-config BUNDLE_DIR` makes vLLM stop on every end-of-turn "
        "id listed in generation_config.json. Then query it with any OpenAI client:", "", "```bash",
        "curl http://127.0.0.1:8000/v1/chat/completions -H 'Content-Type: application/json' \\",
        f"  -d '{{\"model\": \"{name}\", \"messages\": [{{\"role\": \"user\", \"content\": \"Hello\"}}]}}'",
        "```", "", "The model card is MODEL_CARD.md.", ""])


def write_vllm(folder: Path, model, tokenizer, run_dir: Path, info: RunInfo, *, dtype: str,
               checkpoint: str | None = None) -> dict:
    """The hf bundle plus chat_template.jinja and a README with the vLLM launch command (card in MODEL_CARD.md)."""
    record = write_hf(folder, model, tokenizer, run_dir, info, dtype=dtype, fmt="vllm", checkpoint=checkpoint)
    (folder / "README.md").rename(folder / "MODEL_CARD.md")
    atomic_write_text(folder / "chat_template.jinja", tokenizer.chat_template)
    atomic_write_text(folder / "README.md", vllm_readme(info.name, record["template_sha256"]))
    return record
