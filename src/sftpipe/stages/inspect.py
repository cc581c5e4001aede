"""`sftpipe inspect`: one rendered record, its examples with their trained tokens (`show.print_inspect` prints
them highlighted)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..config import SftpipeConfig
from ..dataset import build_renderer, read_data
from ..errors import ConfigError
from ..render import Example
from ..templates import Template


@dataclass
class InspectResult:
    """The examples record `index` renders to, the tokenizer that decodes them and the template that wrote them."""

    examples: list[Example]
    tokenizer: Any
    template: Template


def run(cfg: SftpipeConfig, index: int = 0) -> InspectResult:
    """Render record `index` of `data.train`."""
    if not cfg.data.train:
        raise ConfigError("config", ["data.train: no input files; fix: pass --input FILE"])
    read = read_data(cfg.data, cfg.data.train, "data.train", on_error="fail")
    if not 0 <= index < len(read.conversations):
        raise ConfigError("--index", [f"index {index} is out of range; the input has {len(read.conversations)} "
                                      f"records (allowed: 0..{len(read.conversations) - 1})"])
    renderer = build_renderer(cfg.model, cfg.template, cfg.render)
    return InspectResult(renderer.render(read.conversations[index]), renderer.tokenizer, renderer.template)
