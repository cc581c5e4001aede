"""The eval cache: a plain baseline model's `evaluate_model` results (metrics, replies and generations files), keyed
by everything that decides them, so the same baseline is never evaluated twice (the Harbor demo evaluates its base
model against the SFT run, then against the DPO run).

An entry is `<cache root>/eval/<key>/` (or `$SFTPIPE_EVAL_CACHE/<key>/`): metrics.json, replies.json,
generations/*.jsonl and, written last, cache.json (the key and every file's size and sha256). It is written beside
and swapped in whole (`sftpipe.commit`); a missing, partial or corrupt entry is a miss, never an error. JSON only.
Run folders and checkpoints are never cached (their weights change); the judge is not part of an entry.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..commit import read_manifest, staged_folder, write_manifest
from ..errors import ModelError
from ..io import atomic_write_bytes, sha256_file, write_json
from ..models import cache_dir, load_tokenizer, resolve_model
from ..runs import resolve
from ..templates import load_template

if TYPE_CHECKING:
    from .evaluator import Inputs

MARKER = "cache.json"
MODEL_SUFFIXES = (".safetensors", ".json", ".txt", ".model", ".jinja")  # weights, config, tokenizer, template
Replies = dict[str, list[str]]


def eval_cache_dir() -> Path:
    """Where entries live: `$SFTPIPE_EVAL_CACHE`, else `<cache root>/eval` (`$SFTPIPE_CACHE`, ~/.cache/sftpipe)."""
    return Path(os.environ.get("SFTPIPE_EVAL_CACHE") or cache_dir() / "eval")


def canonical(obj: Any) -> bytes:
    """Canonical JSON bytes: sorted keys, no spaces, anything JSON lacks (paths, enums) as its str.

    >>> canonical({"b": 1, "a": (Path("x"), None)})
    b'{"a":["x",null],"b":1}'
    """
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def digest_files(root: Path, paths: list[Path]) -> str:
    """sha256 over each file's path (relative to `root`) and the sha256 of its bytes, in sorted path order."""
    h = hashlib.sha256()
    for rel, path in sorted((p.relative_to(root).as_posix(), p) for p in paths):
        h.update(rel.encode() + b"\0" + bytes.fromhex(sha256_file(path)))
    return h.hexdigest()


def model_digest(folder: Path) -> str:
    """The identity of a model folder: its weight, config, tokenizer and template files (names and bytes)."""
    return digest_files(folder, [p for p in folder.iterdir() if p.is_file() and p.suffix in MODEL_SUFFIXES])


# What an eval result cannot depend on: evaluate and generate import neither the verbs above them nor the other
# stage libraries (import-linter contract "Eval results", pyproject.toml), and the layers below import none of
# them (every config section lives in sftpipe.config, below), so a change there keeps the cache warm.
NOT_EVAL_SOURCE = ("cli.py", "__main__.py", "stages", "demo", "curate", "train", "dpo", "serve", "review", "doctor",
                   "export")


@functools.cache
def source_digest(root: Path | None = None) -> str:
    """sha256 over the sftpipe source and shipped data files an eval can run (evaluate and the layers below it),
    so a change there makes new keys."""
    root = root or Path(__file__).resolve().parents[1]
    return digest_files(root, [p for p in root.rglob("*") if p.is_file() and p.suffix != ".pyc"
                               and _eval_source(p.relative_to(root).parts)])


def _eval_source(parts: tuple[str, ...]) -> bool:
    """Whether a file (its path parts under the package) is source an eval can run.

    >>> [_eval_source(p) for p in (("render.py",), ("train", "data.py"), ("config", "curate.py"), ("a", ".b"))]
    [True, False, True, False]
    """
    return (parts[0] not in NOT_EVAL_SOURCE
            and not any(part == "__pycache__" or part.startswith(".") for part in parts))


def serving_template(ref: str, template: str) -> dict:
    """Name and sha256 of the template `load_reference` serves model `ref` with (only its tokenizer is loaded)."""
    tokenizer = load_tokenizer(ref)
    t = load_template("model" if getattr(tokenizer, "chat_template", None) else template, tokenizer)
    return {"name": t.name, "sha256": t.sha256}


def key_parts(ref: str, inp: Inputs, *, template: str, device: str) -> dict:
    """Everything that decides a plain model's `evaluate_model` results (JSON-ready)."""
    import torch
    import transformers

    cfg = inp.cfg
    # eval.constrained_schema (an extra measurement) joins the key only when on: off, the config part is the same
    # as before the option existed
    config = cfg.model_dump(mode="json", exclude=None if cfg.constrained_schema else {"constrained_schema"})
    return {
        "model": {"files": model_digest(resolve_model(ref)), "template": serving_template(ref, template)},
        "config": config,
        "sets": [s.model_dump(mode="json") for s in inp.sets],  # data.eval files when eval.sets is empty
        "items": {name: [dataclasses.asdict(it) for it in items] for name, items in inp.items.items()},
        "deciles": inp.deciles,
        "general": [dataclasses.asdict(it) for it in inp.general],
        "max_length": inp.max_length,
        "policy": {"kind": cfg.policy, "rules": sha256_file(cfg.rules) if cfg.rules else None},
        "device": {"kind": device, "name": torch.cuda.get_device_name() if device == "cuda" else None,
                   # kernels for another instruction set may round differently (ATEN_CPU_CAPABILITY, oneDNN)
                   "cpu_kernels": [torch.backends.cpu.get_cpu_capability(), os.environ.get("ONEDNN_MAX_CPU_ISA")]
                   if device == "cpu" else None},
        "versions": {"sftpipe": source_digest(), "torch": torch.__version__,
                     "transformers": transformers.__version__},
    }


def _safe_name(name: str) -> bool:
    """A file name an entry may hold (nothing outside the entry, nothing hidden).

    >>> [_safe_name(n) for n in ("metrics.json", "generations/a.jsonl", "generations/../x", "../x", "a/b/c")]
    [True, True, False, False, False]
    """
    parts = name.split("/")
    return (len(parts) == 1 or (len(parts) == 2 and parts[0] == "generations")) \
        and all(p and not p.startswith(".") for p in parts)


def read_entry(folder: Path, key: str) -> dict[str, bytes] | None:
    """Every file of a complete entry (name -> bytes, each as its manifest lists it); None when the entry is
    missing, partial or corrupt."""
    manifest = read_manifest(folder, MARKER)
    if manifest is None or manifest.get("key") != key \
            or not {"metrics.json", "replies.json"} <= set(manifest["files"]):
        return None
    files = {}
    for name, entry in manifest["files"].items():
        if not _safe_name(name) or not isinstance(entry, dict):
            return None
        try:
            data = (folder / name).read_bytes()
        except OSError:
            return None
        if len(data) != entry.get("size") or hashlib.sha256(data).hexdigest() != entry.get("sha256"):
            return None
        files[name] = data
    return files


@dataclasses.dataclass
class BaselineCache:
    """The entry for one baseline evaluation: `load` it (a hit) or `store` a fresh one (after a miss)."""

    ref: str
    key: str
    folder: Path
    inp: Inputs

    def load(self, label: str) -> tuple[dict, Replies] | None:
        """(metrics, replies) as `evaluate_model` returned them, with its generations files written to
        out_dir/generations/<label>/; None on a miss."""
        files = read_entry(self.folder, self.key)
        if files is None:
            return None
        try:
            metrics, replies = json.loads(files.pop("metrics.json")), json.loads(files.pop("replies.json"))
        except ValueError:
            return None
        if not isinstance(metrics, dict) or not isinstance(replies, dict):
            return None
        out = self.inp.out_dir / "generations" / label
        for name, data in files.items():
            atomic_write_bytes(out / name.split("/")[-1], data)
        metrics["model"] = {**metrics.get("model", {}), "label": label, "ref": self.ref}  # this run's name for it
        return metrics, replies

    def store(self, label: str, metrics: dict, replies: Replies) -> bool:
        """Write the entry (the generations from out_dir/generations/<label>/) beside and swap it in; False when
        it could not be written (a full disk, a concurrent writer's swap: the eval goes on either way)."""
        src = self.inp.out_dir / "generations" / label
        names = [f"{s.name}.jsonl" for s in self.inp.sets if s.generate]
        names += [f"{name}.constrained.jsonl" for name, e in metrics.get("sets", {}).items()
                  if "generation_constrained" in e]  # eval.constrained_schema's replies
        if "ifeval" in metrics.get("regression", {}):
            names.append("ifeval.jsonl")
        try:
            with staged_folder(self.folder) as tmp:
                write_json(tmp / "metrics.json", metrics)
                write_json(tmp / "replies.json", replies)
                (tmp / "generations").mkdir()
                for name in names:
                    if (src / name).is_file():
                        shutil.copyfile(src / name, tmp / "generations" / name)
                write_manifest(tmp, MARKER, key=self.key, stage="eval cache")
        except (OSError, TypeError, ValueError):
            return False
        return True

    def record(self, hit: bool) -> dict:
        """What metrics.json says about where the baseline came from."""
        return {"key": self.key, "hit": hit, "folder": str(self.folder)}


def baseline_cache(ref: str, inp: Inputs, *, template: str, device: str) -> BaselineCache | None:
    """The cache entry for a plain model baseline (`template`: what load_reference gets); None for a run folder
    or a checkpoint, which are never cached."""
    try:
        resolve(ref)
    except ModelError:  # not a run: a plain model, whose results are cached
        key = hashlib.sha256(canonical(key_parts(ref, inp, template=template, device=device))).hexdigest()
        return BaselineCache(ref, key, eval_cache_dir() / key, inp)
    return None
