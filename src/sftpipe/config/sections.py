"""The sections of the project config that are not a stage library's own: model, template, data, render, train,
lora, dpo and review (curate, eval and serve are in their own modules beside this one). Imports only pydantic."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator

from .base import Section


class ModelConfig(Section):
    """Which model: an embedded name, a local HF folder, or a hub id (`owner/name`, or `owner/name@revision`)."""

    name: str = "smollm2-135m-instruct"
    revision: str | None = None  # hub ids: a branch, tag or commit (the same as name: owner/name@revision)
    tokenizer: str | None = None  # a different tokenizer folder; default: the model's own
    trust_remote_code: bool = False

    @field_validator("revision")
    @classmethod
    def _revision(cls, v: str | None, info) -> str | None:
        name = info.data.get("name", "")
        if v is not None and ("/" not in name or "@" in name):
            raise ValueError(f"applies to a hub id without a revision (owner/name), and model.name is {name!r}; "
                             "fix: remove model.revision, or write the revision into the name (owner/name@rev) only "
                             "once")
        return v

    def model_post_init(self, _context) -> None:
        if self.revision is not None:  # one reference string everywhere: owner/name@revision
            self.name, self.revision = f"{self.name}@{self.revision}", None


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
    num_proc: int = Field(0, ge=0)  # processes rendering a large input: 0 = every core, 1 = this process only
    # `sftpipe render`'s parity proof: this many examples drawn at random (seeded), plus every example that was
    # truncated, escapes control strings in content, is one turn of a split conversation or has an unusual edge
    parity_examples: int = Field(2000, ge=0)


DEEPSPEED_PRESETS = ("zero2", "zero3")  # shipped DeepSpeed configs (sftpipe.train.parallel.PRESETS)


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
    fsdp: str = ""  # e.g. "full_shard auto_wrap" (transformers TrainingArguments.fsdp); GPUs only
    fsdp_config: dict[str, Any] = Field(default_factory=dict)  # e.g. {"state_dict_type": "SHARDED_STATE_DICT"}
    deepspeed: str = ""  # a preset (zero2, zero3) or a DeepSpeed JSON config file; GPUs only
    dataloader_workers: int = Field(0, ge=0)
    parity_examples: int = Field(1000, ge=0)  # examples checked against the saved tokenizer before training

    @field_validator("report_to", mode="before")
    @classmethod
    def _report_list(cls, v: Any) -> Any:
        return [] if v in (None, "none") else [v] if isinstance(v, str) else v

    @field_validator("deepspeed")
    @classmethod
    def _deepspeed(cls, v: str) -> str:
        if v and v not in DEEPSPEED_PRESETS and not v.endswith(".json"):
            raise ValueError(f"{v!r} is neither a preset ({', '.join(DEEPSPEED_PRESETS)}) nor a .json file; fix: "
                             "one of those")
        return v


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
