"""The project config on the ground floor: every section model (`sections`, `curate`, `evaluate`, `serve`, each
importing only pydantic), the root model and loading (`project`: YAML + `--set`, every error at once). Library
code takes its own section; stages and the CLI hold the root."""

from .base import Section
from .project import SftpipeConfig, format_errors, load_config, parse_overrides, read_yaml
from .sections import (DPO_LOSSES, DataConfig, DpoConfig, LoraConfig, ModelConfig, RenderConfig, ReviewConfig,
                       TemplateConfig, TrainConfig)

__all__ = ["DPO_LOSSES", "DataConfig", "DpoConfig", "LoraConfig", "ModelConfig", "RenderConfig", "ReviewConfig",
           "Section", "SftpipeConfig", "TemplateConfig", "TrainConfig", "format_errors", "load_config",
           "parse_overrides", "read_yaml"]
