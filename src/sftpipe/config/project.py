"""The project config (`sftpipe.yaml`): the root model over every section, YAML + `--set` overrides.

Every problem in a config is reported at once, each with its dotted path and the allowed values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from ..errors import ConfigError
from .base import Section
from .curate import CurateConfig
from .evaluate import EvalConfig
from .sections import (DataConfig, DpoConfig, LoraConfig, ModelConfig, RenderConfig, ReviewConfig, TemplateConfig,
                       TrainConfig)
from .rules import cross_field_problems
from .serve import ServeConfig


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
        cfg = SftpipeConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(source, format_errors(err, SftpipeConfig)) from None
    problems = cross_field_problems(cfg)
    if problems:
        raise ConfigError(source, problems)
    return cfg
