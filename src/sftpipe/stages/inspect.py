"""`sftpipe inspect`: show one rendered example with its trained tokens highlighted."""

from __future__ import annotations

from rich.console import Console
from rich.text import Text

from ..config import SftpipeConfig
from ..dataset import build_renderer, read_data
from ..errors import ConfigError
from ..labels import label_runs
from ..render import Example


OPEN, CLOSE = "⟦", "⟧"  # marks trained spans where colour cannot (output piped to a file or a pager)


def highlight(example: Example, tokenizer, *, marks: bool = False) -> Text:
    """The example's text, token by token: trained tokens on green, the rest dim; with `marks`, each trained span
    also sits between ⟦ and ⟧ so it shows without colour."""
    out = Text()
    for start, end, trained in label_runs(example.labels):
        if marks and trained:
            out.append(OPEN)
        for tok_id in example.input_ids[start:end]:
            out.append(tokenizer.decode([tok_id], skip_special_tokens=False),
                       style="black on green" if trained else "dim")
        if marks and trained:
            out.append(CLOSE)
    return out


def run(cfg: SftpipeConfig, index: int = 0, console: Console | None = None) -> list[Example]:
    """Render record `index` of `data.train` and print it; returns its examples."""
    if not cfg.data.train:
        raise ConfigError("config", ["data.train: no input files; fix: pass --input FILE"])
    read = read_data(cfg.data, cfg.data.train, "data.train", on_error="fail")
    if not 0 <= index < len(read.conversations):
        raise ConfigError("--index", [f"index {index} is out of range; the input has {len(read.conversations)} "
                                      f"records (allowed: 0..{len(read.conversations) - 1})"])
    renderer = build_renderer(cfg.model, cfg.template, cfg.render)
    console = console or Console()
    examples = renderer.render(read.conversations[index])
    for ex in examples:
        console.print(highlight(ex, renderer.tokenizer, marks=not console.is_terminal), soft_wrap=True)
        console.print(f"[bold]{len(ex.input_ids)} tokens, {ex.n_trained} trained "
                      f"({ex.n_trained / len(ex.input_ids):.0%}), end-of-turn trained for "
                      f"{ex.eot_trained}/{ex.trained_messages} replies; template {renderer.template.name} "
                      f"sha256 {renderer.template.sha256[:12]}[/bold]")
    return examples
