"""The `eval:` config section: eval sets and where their checks live, generation, judge, regression, weights.

Dotted keys (`category_key`, `json_when`, values of `expected`) are paths into an eval record, e.g.
`facts.refund_amount`. Relative file paths are read from the current folder.
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from .base import Section

# The score components `eval.weights` may name (each in [0, 1], higher is better; see score.py).
COMPONENTS = ("schema_validity", "policy", "correctness", "win_rate", "length_controlled_win_rate", "ifeval",
              "general_retention", "human_tone", "human_policy", "human_correctness")



class EvalSetConfig(Section):
    """One eval file (JSONL): prompts to generate from, targets for held-out loss, and what to check.

    A record's prompt is its `messages` up to the last assistant message (whose content is the target); a record
    whose messages end with a user turn is a prompt-only record and takes its target from `reference_key`.
    """

    name: str
    path: str
    format: Literal["auto", "openai", "sharegpt", "alpaca", "prompt_completion"] = "auto"
    category_key: str = "category"
    facts_key: str = "facts"  # ticket facts for `policy: harbor`
    reference_key: str | None = "reference"
    schema_key: str = "schema"  # a record field naming its JSON Schema (a key of eval.schemas, or a path)
    schema_name: str | None = Field(None, alias="schema")  # the set's schema (key of eval.schemas, or a path) ...
    json_when: str | None = None  # ... and the expected fields apply where this field is truthy (None: always)
    expected_key: str = "expected"  # a record field {json field: expected value}
    expected: dict[str, str] = Field(default_factory=dict)  # or: json field -> dotted record path
    generate: bool = True
    loss: bool = True
    judge: bool = True
    limit: int | None = Field(None, ge=1)  # at most N records, sampled per `sample`
    sample: Literal["stratified", "first"] = "stratified"  # stratified: by category_key, seeded; first: file order
    seed: int = 0

    model_config = ConfigDict(extra="forbid", validate_default=True, populate_by_name=True)


class GenerationConfig(Section):
    """Batched generation with the run's own chat template; greedy unless `do_sample`."""

    max_new_tokens: int = Field(256, ge=1)
    batch_size: int = Field(16, ge=1)
    do_sample: bool = False
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    seed: int = 0


class JudgeConfig(Section):
    """Pairwise LLM judge over an OpenAI-compatible endpoint (`{url}/chat/completions`), both orders per prompt."""

    enabled: bool = False
    url: str = "http://127.0.0.1:8000/v1"
    model: str = "judge"
    api_key_env: str | None = None  # name of the environment variable that holds the key, if any
    rubric: str | None = None  # a rubric file; default: the shipped evaluate/data/judge_rubric.md
    sets: list[str] | None = None  # which eval sets to judge (default: every set with judge: true)
    max_prompts: int | None = Field(None, ge=1)  # per set
    timeout_s: float = Field(60.0, gt=0)
    retries: int = Field(2, ge=0)
    concurrency: int = Field(4, ge=1)
    max_tokens: int = Field(16, ge=1)
    n_boot: int = Field(2000, ge=100)
    seed: int = 0


class RegressionConfig(Section):
    """General-capability regression against the baseline: IFEval (strict) and NLL on a general held-out set."""

    ifeval: bool = True
    ifeval_subset: int | None = Field(100, ge=1, le=541)  # None: all 541 prompts
    ifeval_max_new_tokens: int = Field(384, ge=1)
    general: str | None = None  # JSONL of general conversations (any reader format) for held-out NLL
    general_format: Literal["auto", "openai", "sharegpt", "alpaca", "prompt_completion"] = "auto"
    general_limit: int | None = Field(200, ge=1)


class EvalConfig(Section):
    """The whole `eval:` section."""

    sets: list[EvalSetConfig] = Field(default_factory=list)  # empty: data.eval files as plain held-out sets
    schemas: dict[str, str] = Field(default_factory=dict)  # schema name -> JSON Schema file
    rules: str | None = None  # policy rules file
    # rules: the generic format of eval.rules; harbor: sftpipe.demo.check_reply (needs no file); auto: by the file
    policy: Literal["auto", "rules", "harbor"] = "auto"
    against: str | None = None  # baseline: a run folder, a checkpoint folder or a model; default the base model
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    # Generate the replies that carry a JSON schema a second time, decoding constrained to their schema
    # (sftpipe.generate.constrain), and report schema_validity_constrained beside the free schema_validity: an
    # extra measurement of what structured outputs would give; the free replies and the score stay as they are.
    constrained_schema: bool = False
    loss_tokens_per_batch: int = Field(4096, ge=64)
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    regression: RegressionConfig = Field(default_factory=RegressionConfig)
    human: str | None = None  # CSV or JSONL of human ratings: prompt_id, checkpoint, tone, policy, correctness
    human_scale: tuple[float, float] = (1.0, 5.0)  # rating range, mapped to [0, 1]
    weights: dict[str, float] = Field(default_factory=lambda: {
        "schema_validity": 1.0, "policy": 2.0, "correctness": 1.0, "win_rate": 1.0, "ifeval": 0.5,
        "general_retention": 0.5, "human_tone": 0.5, "human_policy": 1.0, "human_correctness": 1.0})
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # Reuse a plain baseline model's results (loss, generations, checks, regression; not the judge) from the eval
    # cache when the same model, items, config and code were evaluated before: the demo evaluates its base twice.
    cache_baseline: bool = True

    @model_validator(mode="after")
    def _check(self) -> EvalConfig:
        bad = sorted(k for k in self.weights if k not in COMPONENTS)
        if bad:
            raise ValueError(f"weights: unknown component(s) {bad}; allowed: {', '.join(COMPONENTS)}")
        if any(w < 0 for w in self.weights.values()):
            raise ValueError(f"weights must be >= 0, got {self.weights}")
        names = [s.name for s in self.sets]
        if len(names) != len(set(names)):
            raise ValueError(f"sets: names must be unique, got {names}")
        unknown = sorted(set(self.judge.sets or []) - set(names)) if self.sets else []
        if unknown:
            raise ValueError(f"judge.sets names unknown set(s) {unknown}; sets are: {', '.join(names)}")
        lo, hi = self.human_scale
        if not lo < hi:
            raise ValueError(f"human_scale must be (low, high) with low < high, got {self.human_scale}")
        return self
