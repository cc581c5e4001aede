"""Proof that the training render equals the serving render, byte for byte and token for token.

The tokenizer is saved with its template in `tokenizer_config.json`, reloaded from disk, and its own
`apply_chat_template` is run on every example's messages. Text must match exactly; ids must match
`apply_chat_template(..., sanitize_control_tokens=True)`, which keeps control strings in content as text.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from .errors import TemplateError


def save_tokenizer(tokenizer, folder: Path) -> Path:
    """Save `tokenizer` with its chat template inside tokenizer_config.json (not a side file)."""
    folder.mkdir(parents=True, exist_ok=True)
    stale = folder / "chat_template.jinja"
    if stale.exists():
        stale.unlink()
    tokenizer.save_pretrained(folder, save_jinja_files=False)
    return folder


def check_parity(tokenizer_dir: Path, examples: list, *, limit: int | None = None) -> dict[str, Any]:
    """Compare each example's text and ids with the saved tokenizer's `apply_chat_template`; return the report."""
    from transformers import AutoTokenizer

    saved = AutoTokenizer.from_pretrained(tokenizer_dir)
    if not saved.chat_template:
        raise TemplateError(f"{tokenizer_dir} has no chat template after saving; fix: report this as a bug")
    checked = text_bad = ids_bad = 0
    first: dict[str, Any] | None = None
    for ex in examples[:limit] if limit else examples:
        checked += 1
        if getattr(ex, "prompt_chars", None) is not None:  # a serving example: its prompt is exactly serving's
            text = saved.apply_chat_template(ex.messages[:-1], tokenize=False, add_generation_prompt=True)
            ids = saved.apply_chat_template(ex.messages[:-1], tokenize=True, add_generation_prompt=True,
                                            sanitize_control_tokens=True, return_dict=False)
            text_ok = text == ex.text[: ex.prompt_chars]
            ids_ok = list(ids) == list(ex.input_ids[: len(ids)])
        else:
            text = saved.apply_chat_template(ex.messages, tokenize=False)
            ids = saved.apply_chat_template(ex.messages, tokenize=True, sanitize_control_tokens=True,
                                            return_dict=False)
            text_ok, ids_ok = text == ex.text, list(ids[: len(ex.input_ids)]) == list(ex.input_ids)
        text_bad += not text_ok
        ids_bad += not ids_ok
        if first is None and not (text_ok and ids_ok):
            first = {"meta": {k: v for k, v in ex.meta.items() if isinstance(v, (str, int, float))},
                     "text_equal": text_ok, "ids_equal": ids_ok}
    source = saved.chat_template
    return {
        "template_sha256": hashlib.sha256(source.encode("utf-8")).hexdigest(),
        "tokenizer_dir": str(tokenizer_dir),
        "examples_checked": checked,
        "text_mismatches": text_bad,
        "token_mismatches": ids_bad,
        "first_mismatch": first,
        "method": "saved tokenizer apply_chat_template(tokenize=False) == training text; "
                  "apply_chat_template(tokenize=True, sanitize_control_tokens=True) == training ids "
                  "(a truncated example must be a prefix); for a per-turn serving example, the generation prompt's "
                  "text and ids == the example's prompt part",
    }
