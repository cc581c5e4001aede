"""The project config (`sftpipe.yaml`): one small pydantic model per section, YAML + `--set` overrides.

Every problem in a config is reported at once, each with its dotted path and the allowed values.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .curate.config import CurateConfig
from .errors import ConfigError
from .evaluate.config import EvalConfig
from .serve.config import ServeConfig


class Section(BaseModel):
    """Base for config sections: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


class ModelConfig(Section):
    """Which model: an embedded name, a local HF folder, or a hub id (offline here)."""

    name: str = "smollm2-135m-instruct"
    tokenizer: str | None = None  # a different tokenizer folder; default: the model's own
    trust_remote_code: bool = False


class DataConfig(Section):
    """Where the conversations come from and how to read them."""

    train: list[str] = Field(default_factory=list)
    eval: list[str] = Field(default_factory=list)
    format: Literal["auto", "openai", "sharegpt", "alpaca", "prompt_completion"] = "auto"
    column_map: dict[str, str] = Field(default_factory=dict)
    on_error: Literal["fail", "skip"] = "fail"
    allow_empty: bool = False  # an input with no records is an error unless this is set

    @field_validator("train", "eval", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v


class TemplateConfig(Section):
    """The chat template: the model's own (`model`, the default), a built-in name, or a `.jinja` file."""

    name: str = "model"


class RenderConfig(Section):
    """Label masking, truncation and batching of rendered conversations."""

    max_length: int = Field(2048, ge=16)
    train_on: Literal["all_assistant", "last_assistant"] = "all_assistant"
    truncation: Literal["drop", "drop_oldest_turns", "truncate"] = "drop"
    overflow: Literal["error", "drop", "truncate"] = "drop"
    # Assistant reasoning (`reasoning_content` / `thinking`, or a leading <think>...</think> in the reply) on
    # templates that render it or whose generation prompt opens a think block (DeepSeek-R1, Nemotron 3, Qwen3):
    # keep = train it, and an empty think block where a reply has none; empty = drop all reasoning, train
    # empty think blocks; refuse = a trained reply without reasoning on a think-prompt template is a record error.
    reasoning: Literal["keep", "empty", "refuse"] = "keep"


class TrainConfig(Section):
    """SFT (`sftpipe train`): mode, schedule, batching, eval/checkpoints, precision and logging."""

    mode: Literal["lora", "qlora", "full"] = "lora"
    output_dir: str = "runs"  # the run folder is <output_dir>/<name>
    overwrite: bool = False  # replace an existing run folder (else: error, or --resume)
    lr: float | None = Field(None, gt=0)  # default: 2e-4 for lora/qlora, 2e-5 for full
    scheduler: Literal["cosine", "linear", "constant_with_warmup"] = "cosine"
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    epochs: float = Field(2.0, gt=0)
    max_steps: int = Field(-1, ge=-1)  # > 0: stop after this many optimizer steps (overrides epochs)
    batch_size: int = Field(8, ge=1)  # max rows per device per micro-batch (padded: sequences; packed: packs)
    max_tokens: int | None = Field(None, ge=16)  # padded: max token slots (rows x longest) per micro-batch;
    # default 768 on a CPU (peak ~2.5 GB for SmolLM2-135M LoRA), no cap on a GPU
    pad_to_multiple_of: int | None = Field(None, ge=1)  # padded: row width rounded up to a multiple of this;
    # default 64 for bf16 on a CPU (bounds the shapes oneDNN compiles and caches kernels for), 8 on a GPU, else 1
    grad_accum: int = Field(8, ge=1)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, ge=0)
    seed: int = 42
    gradient_checkpointing: bool = False
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    batching: Literal["auto", "packed", "padded"] = "auto"  # auto: packed on GPU, length-grouped padded on CPU
    loss_positions: Literal["trained", "all"] = "trained"  # lm_head + loss only where labels are trained
    category_floor: float = Field(0.0, ge=0, lt=1)  # > 0: record categories below this share of the training
    # examples are repeated (seeded) up to it, so a rare category is seen often enough in a short run
    eval_steps: int = Field(50, ge=1)
    eval_limit: int | None = Field(None, ge=1)  # held-out loss during training on at most this many data.eval
    # records, stratified by category (seeded); a CPU run's curve costs less, and `sftpipe eval` still reads them all
    save_steps: int | None = Field(None, ge=1)  # default: eval_steps
    save_total_limit: int | None = Field(3, ge=1)
    early_stopping_patience: int | None = Field(None, ge=1)  # evals without improvement before stopping
    logging_steps: int = Field(1, ge=1)
    report_to: list[str] = Field(default_factory=lambda: ["tensorboard"])
    fsdp: str = ""  # e.g. "full_shard auto_wrap" (transformers TrainingArguments.fsdp); multi-GPU only
    fsdp_config: dict[str, Any] = Field(default_factory=dict)
    dataloader_workers: int = Field(0, ge=0)
    parity_examples: int = Field(1000, ge=0)  # examples checked against the saved tokenizer before training

    @field_validator("report_to", mode="before")
    @classmethod
    def _report_list(cls, v: Any) -> Any:
        return [] if v in (None, "none") else [v] if isinstance(v, str) else v


class LoraConfig(Section):
    """LoRA adapter shape (train.mode lora/qlora); QLoRA's 4-bit quantization settings."""

    r: int = Field(16, ge=1)
    alpha: float | None = Field(None, gt=0)  # default: 2 * r
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"  # all attention + MLP projections
    use_rslora: bool = False
    quant_type: Literal["nf4", "fp4"] = "nf4"  # qlora only
    double_quant: bool = True  # qlora only


DPO_LOSSES = ("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
              "aot_unpaired", "apo_zero", "apo_down", "discopop", "sigmoid_norm")  # TRL 1.16 DPOTrainer's loss_type


class DpoConfig(Section):
    """DPO (`sftpipe dpo`): preference pairs, the SFT run that is the reference, and the preference schedule.

    lr default: 1e-5 for LoRA (the top of the guide's 5e-6..1e-5 for LoRA on small models: a low-rank update moves
    the policy less per step, and a light pass is a few hundred steps), 1e-6 for full weights (every weight moves).
    """

    reference: str | None = None  # required: an SFT run folder (runs/<name>) or one of its checkpoint folders
    name: str | None = None  # the DPO run's name (folder <output_dir>/<name>); default: <project name>-dpo
    train: list[str] = Field(default_factory=list)  # preference pairs (JSONL / Parquet)
    eval: list[str] = Field(default_factory=list)
    format: Literal["auto", "prompt_chosen_rejected", "conversations"] = "auto"
    on_error: Literal["fail", "skip"] = "fail"  # skip: bad pairs go to rejects.jsonl with their reason
    beta: float = Field(0.1, gt=0)
    loss: Literal[DPO_LOSSES] = "sigmoid"  # type: ignore[valid-type]
    sft_weight: float = Field(0.0, ge=0)  # > 0: plus TRL's `sft` loss (the chosen reply's mean token NLL) at this
    # weight (RPO), so the pass raises the chosen reply instead of only sinking the rejected one
    lr: float | None = Field(None, gt=0)  # default: 1e-5 for LoRA, 1e-6 for full (see above)
    scheduler: Literal["cosine", "linear", "constant_with_warmup"] = "linear"
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    epochs: float = Field(1.0, gt=0)
    max_steps: int = Field(-1, ge=-1)
    batch_size: int = Field(4, ge=1)  # pairs per micro-batch (each pair is two rows: chosen, rejected)
    grad_accum: int = Field(4, ge=1)
    max_length: int = Field(1024, ge=16)  # prompt + reply tokens; a longer pair is an error (or skipped)
    max_prompt_length: int = Field(768, ge=8)
    precompute_ref_log_probs: bool = True  # reference log-probs once, cached by data hash + reference sha256
    group_by_length: bool = True  # micro-batches of similar length (less padding)
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    seed: int = 42
    max_grad_norm: float = Field(1.0, ge=0)
    logging_steps: int = Field(1, ge=1)
    eval_steps: int = Field(50, ge=1)
    save_steps: int = Field(50, ge=1)
    save_total_limit: int | None = Field(2, ge=1)
    early_stopping_patience: int | None = Field(None, ge=1)
    report_to: list[str] = Field(default_factory=lambda: ["tensorboard"])
    output_dir: str = "runs"  # the run folder is <output_dir>/<name>
    overwrite: bool = False

    @field_validator("train", "eval", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("report_to", mode="before")
    @classmethod
    def _report_list(cls, v: Any) -> Any:
        return [] if v in (None, "none") else [v] if isinstance(v, str) else v


class ReviewConfig(Section):
    """`sftpipe review`: blind pairwise sessions (sampling, rubric, swapped repeats) and the page's input limits."""

    n: int = Field(200, ge=1)  # prompts per session, stratified by category
    sets: list[str] | None = None  # eval sets to draw from (default: every set both runs generated)
    seed: int = 0  # sampling and the left/right order
    repeats: int = Field(0, ge=0)  # items shown again in swapped order, to measure each reviewer's consistency
    rubric: list[str] = Field(default_factory=lambda: ["tone", "policy", "correctness"])  # 1-5 scores per side
    max_comment_chars: int = Field(2000, ge=0)
    max_body_bytes: int = Field(65536, ge=1024)
    max_concurrent: int = Field(32, ge=1)  # requests in flight; more get 429

    @field_validator("rubric")
    @classmethod
    def _rubric(cls, v: list[str]) -> list[str]:
        bad = [f for f in v if not re.fullmatch(r"[a-z][a-z0-9_]{0,31}", f)]
        if bad or len(set(v)) != len(v) or not 1 <= len(v) <= 8:
            raise ValueError(f"rubric: {v} must be 1-8 distinct lower-case names (a-z, 0-9, _), e.g. "
                             "[tone, policy, correctness]")
        return v


class SftpipeConfig(Section):
    """The whole project config. Each verb reads only its own sections."""

    name: str = "run"
    model: ModelConfig = Field(default_factory=ModelConfig)
    template: TemplateConfig = Field(default_factory=TemplateConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    render: RenderConfig = Field(default_factory=RenderConfig)
    curate: CurateConfig = Field(default_factory=CurateConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    lora: LoraConfig = Field(default_factory=LoraConfig)
    dpo: DpoConfig = Field(default_factory=DpoConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    review: ReviewConfig = Field(default_factory=ReviewConfig)

    @model_validator(mode="before")
    @classmethod
    def _shorthands(cls, v: Any) -> Any:
        # `model: NAME` and `template: NAME` stand for `{name: NAME}`
        if isinstance(v, dict):
            v = {**v, **{k: {"name": v[k]} for k in ("model", "template") if isinstance(v.get(k), str)}}
        return v


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """Turn `["train.lr=1e-4", "render.max_length=512"]` into a nested dict; values parse as YAML scalars.

    >>> parse_overrides(["render.max_length=512", "model.name=x"])
    {'render': {'max_length': 512}, 'model': {'name': 'x'}}
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError("--set", [f"{item!r} is not KEY=VALUE; fix: write e.g. --set render.max_length=1024"])
        out = _merge(out, _nest(key.strip().split("."), yaml.safe_load(raw) if raw.strip() else ""))
    return out


def _nest(parts: list[str], value: Any) -> dict:
    return {parts[0]: _nest(parts[1:], value) if len(parts) > 1 else value}


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _allowed(model: type[BaseModel], loc: tuple) -> list[str]:
    """The field names allowed at the parent of `loc` (for unknown-key errors)."""
    cls: Any = model
    for part in loc[:-1]:
        field = cls.model_fields.get(part) if isinstance(part, str) else None
        ann = field.annotation if field else None
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            cls = ann
        else:
            return []
    return list(cls.model_fields)


def format_errors(err: ValidationError, model: type[BaseModel]) -> list[str]:
    """One line per pydantic error: dotted path, what is wrong, and what is allowed."""
    problems = []
    for e in err.errors():
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        path = ".".join(str(p) for p in loc) or "<root>"
        if e["type"] == "extra_forbidden":
            allowed = _allowed(model, loc)
            problems.append(f"{path}: unknown key (allowed: {', '.join(allowed)})")
        else:
            problems.append(f"{path}: {e['msg']} (got {e.get('input')!r})")
    return problems


class _DuplicateKey(Exception):
    pass


class _StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (PyYAML silently keeps the last)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise _DuplicateKey(f"line {key_node.start_mark.line + 1}: key {key!r} appears twice (first on line "
                                    f"{seen[key] + 1}), and only one would be kept; fix: merge the two into one")
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path) -> Any:
    """Parse a YAML file strictly (UTF-8, no duplicate keys); ConfigError naming the file, line and fix."""
    p = Path(path)
    try:
        text = p.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(str(p), [f"not UTF-8 (byte {exc.start}: {exc.reason}); fix: save the file as UTF-8"]) \
            from None
    except OSError as exc:
        raise ConfigError(str(p), [f"cannot read it ({exc.strerror}); fix: check the path and its permissions"]) \
            from None
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except _DuplicateKey as exc:
        raise ConfigError(str(p), [str(exc)]) from None
    except yaml.YAMLError as exc:
        raise ConfigError(str(p), [f"invalid YAML: {' '.join(str(exc).split())}"]) from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                base: dict[str, Any] | None = None, flags: dict[str, Any] | None = None) -> SftpipeConfig:
    """Read `path` (YAML, optional) over `base`, then apply `--set` overrides and CLI `flags` (dotted keys, None
    means unset), and validate everything at once."""
    data: dict[str, Any] = dict(base or {})
    source = str(path) if path else "config"
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise ConfigError(source, [f"file not found; fix: pass an existing sftpipe.yaml (cwd: {Path.cwd()})"])
        loaded = read_yaml(p) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(source, ["the top level must be a mapping of sections (model:, data:, ...)"])
        data = _merge(data, loaded)
    data = _merge(data, parse_overrides(overrides or []))
    for key, value in (flags or {}).items():
        if value is not None:
            data = _merge(data, _nest(key.split("."), value))
    try:
        return SftpipeConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(source, format_errors(err, SftpipeConfig)) from None
