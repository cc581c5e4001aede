"""Chat templates: the model's own, a built-in by name, or a `.jinja` file; and the control tokens they write.

Rendering is transformers' (`tokenizer.apply_chat_template` / `render_jinja_template`, sandboxed); this module only
finds the template text, names the control tokens it writes literally, and makes the tokenizer know them as
single special tokens. Built-ins live next to this file as `<name>.jinja`; each is prefix-stable (rendering
`messages[:k]` is a prefix of rendering `messages`) and closes every assistant turn with an end-of-turn token.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import jinja2
from transformers.utils.chat_template_utils import (
    _compile_jinja_template,
    _get_template_literal_text,
    _get_template_variables,
)

from ..errors import TemplateError

# Control-token shapes a template writes literally: <|im_start|>, <|eot_id|>, DeepSeek's <｜User｜> (fullwidth
# bars), Mistral's [INST] / [TOOL_CALLS], Gemma's <start_of_turn>, and <s> / </s>. XML-ish markup such as
# <tool_call> or <think> only counts when the tokenizer already has it as an added token.
_CONTROL_RE = re.compile(
    r"<[|｜][^\s<>|｜]{1,64}[|｜]>"
    r"|\[/?[A-Z][A-Z_]{1,31}\]"
    r"|<(?:start|end)_of_[a-z_]{1,32}>"
    r"|</?s>"
)


@dataclass(frozen=True)
class Template:
    """A chat template's Jinja text, where it came from, its sha256 and the control tokens it writes."""

    name: str  # builtin name, file path, or "model"
    source: str
    sha256: str
    control_tokens: tuple[str, ...]


def builtin_names() -> list[str]:
    """Names of the shipped templates (the `.jinja` files in this package), sorted."""
    return sorted(p.name[: -len(".jinja")] for p in resources.files(__package__).iterdir()
                  if p.name.endswith(".jinja"))


def load_template(spec: str | None, tokenizer) -> Template:
    """Resolve `spec`: None/"model" (the tokenizer's own), a built-in name, a `.jinja` file, or a
    `tokenizer_config.json` / model folder that holds a chat template."""
    if spec is None or spec == "model":
        source = _pick_default(getattr(tokenizer, "chat_template", None), "the tokenizer's chat_template")
        if source is None:
            raise TemplateError("the model's tokenizer has no chat template (template: model); fix: set template "
                                f"to a built-in ({', '.join(builtin_names())}) or a path to a .jinja file")
        return _make("model", source, tokenizer)
    if spec in builtin_names():
        source = resources.files(__package__).joinpath(f"{spec}.jinja").read_text(encoding="utf-8")
        return _make(spec, source, tokenizer)
    path = Path(spec).expanduser()
    if path.exists():
        return _make(spec, _read_path(path), tokenizer)
    raise TemplateError(f"unknown template {spec!r}: not 'model', not a built-in ({', '.join(builtin_names())}), "
                        "and no such file; fix: use 'model', a built-in name, or a path to a .jinja file")


def control_tokens_of(source: str, tokenizer=None) -> tuple[str, ...]:
    """Control-token strings `source` writes literally, in order of first appearance; with a tokenizer, also its
    added tokens found in the template's strings and its bos/eos when the template uses bos_token/eos_token.

    >>> control_tokens_of("{% for m in messages %}<|im_start|>{{ m.role }}\\n{{ m.content }}<|im_end|>{% endfor %}")
    ('<|im_start|>', '<|im_end|>')
    """
    literal = _get_template_literal_text(source)
    found = {m.group(0) for m in _CONTROL_RE.finditer(literal)}
    if tokenizer is not None:
        found |= {t for t in tokenizer.added_tokens_encoder if t in literal and not t.isspace()}
        used = _get_template_variables(source)
        for var in ("bos_token", "eos_token"):
            value = getattr(tokenizer, var, None)
            if var in used and isinstance(value, str) and value:
                found.add(value)
    # Order of first appearance in the template (comments aside); bos/eos written only via variables come first.
    code = re.sub(r"\{#.*?#\}", "", source, flags=re.S)
    return tuple(sorted(found, key=lambda t: (code.find(t), t)))


def prepare_tokenizer(tokenizer, template: Template) -> list[str]:
    """Set `tokenizer.chat_template` to the template and add the control tokens it lacks as special tokens.

    Returns the tokens that got new ids (resize the model's embeddings when it is non-empty). Idempotent.
    """
    tokenizer.chat_template = template.source
    missing = [t for t in template.control_tokens if t not in tokenizer.added_tokens_encoder]
    if not missing:
        return []
    size = len(tokenizer)
    tokenizer.add_special_tokens({"extra_special_tokens": missing}, replace_extra_special_tokens=False)
    vocab = tokenizer.get_vocab()
    for token in missing:
        if tokenizer.encode(token, add_special_tokens=False) != [vocab[token]]:
            raise TemplateError(f"control token {token!r} of template {template.name!r} does not encode as one "
                                "token after adding it; fix: use a tokenizer that lists it as a special token")
    return [t for t in missing if vocab[t] >= size]


def _make(name: str, source: str, tokenizer) -> Template:
    try:
        _compile_jinja_template(source)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"template {name!r} is not valid Jinja (line {exc.lineno}: {exc.message}); "
                            "fix: correct the template text") from None
    return Template(name, source, hashlib.sha256(source.encode("utf-8")).hexdigest(),
                    control_tokens_of(source, tokenizer))


def _read_path(path: Path) -> str:
    """The template text in a .jinja file, a tokenizer_config.json, or a model folder."""
    if path.is_dir():
        if (path / "chat_template.jinja").is_file():
            return (path / "chat_template.jinja").read_text(encoding="utf-8")
        if (path / "tokenizer_config.json").is_file():
            return _read_path(path / "tokenizer_config.json")
        raise TemplateError(f"folder {str(path)!r} has neither chat_template.jinja nor tokenizer_config.json; "
                            "fix: point template at a .jinja file or a saved tokenizer folder")
    if path.suffix == ".json":
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise TemplateError(f"{str(path)!r} is not valid JSON ({exc}); fix: give a tokenizer_config.json "
                                "or a .jinja file") from None
        raw = config.get("chat_template") if isinstance(config, dict) else None
        source = _pick_default(raw, str(path))
        if source is None:
            raise TemplateError(f"{str(path)!r} has no chat_template; fix: give a .jinja file, a built-in "
                                f"({', '.join(builtin_names())}) or a tokenizer_config.json that has one")
        return source
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise TemplateError(f"{str(path)!r} is not UTF-8 text; fix: give a .jinja file") from None


def _pick_default(raw, where: str) -> str | None:
    """A template string from a chat_template value: a string, {name: text}, or [{name, template}] ("default")."""
    if isinstance(raw, list):
        raw = {item.get("name"): item.get("template") for item in raw if isinstance(item, dict)}
    if isinstance(raw, dict):
        if "default" not in raw:
            raise TemplateError(f"{where} holds named templates ({', '.join(map(str, raw))}) but none is "
                                "'default'; fix: save the one you want as a .jinja file and give its path")
        raw = raw["default"]
    if raw is not None and not isinstance(raw, str):
        raise TemplateError(f"{where}: chat_template is a {type(raw).__name__}, not text; fix: give a .jinja file")
    return raw or None
