"""When a reply ends: the stop token ids (the template's end-of-turn, the tokenizer's eos, a run's generation config)
and user stop strings, with the streaming rule that holds back text which could still become a stop string."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..render import ChatRenderer

_PROBE = "\U000f0020sftpipe-probe\U000f0021"


def stop_token_ids(renderer: ChatRenderer, generation_config: str | Path | None = None) -> list[int]:
    """The template's end-of-turn token (the first control token after an assistant reply) and eos, as ids, plus
    every eos id of `generation_config` (a run's generation_config.json) when given."""
    tok = renderer.tokenizer
    text = renderer.render_text([{"role": "user", "content": "hi"}, {"role": "assistant", "content": _PROBE}])
    closing = text.split(_PROBE, 1)[1]
    found = [(closing.find(t), t) for t in renderer.template.control_tokens if t in closing]
    ids: list[int] = []
    if found:
        ids.append(tok.convert_tokens_to_ids(min(found)[1]))
    eos = tok.eos_token_id
    extra = []
    if generation_config is not None and Path(generation_config).is_file():
        value = json.loads(Path(generation_config).read_text(encoding="utf-8")).get("eos_token_id")
        extra = value if isinstance(value, list) else [value]
    for e in [*(eos if isinstance(eos, list) else [eos]), *extra]:
        if isinstance(e, int) and e not in ids:
            ids.append(e)
    if not ids:
        raise ValueError(f"template {renderer.template.name!r} closes assistant replies with no control token and "
                         "the tokenizer has no eos token, so generation could not stop; fix: set an eos_token")
    return ids


def find_stop(text: str, stops: tuple[str, ...], start: int = 0) -> int | None:
    """Index of the earliest stop string in `text` (searching from `start`), or None.

    >>> find_stop("Hello. User: hi", ("User:",))
    7
    >>> find_stop("Hello", ("User:",)) is None
    True
    """
    hits = [i for i in (text.find(s, start) for s in stops if s) if i >= 0]
    return min(hits) if hits else None


def safe_length(text: str, stops: tuple[str, ...]) -> int:
    """How much of `text` may be streamed now: not a trailing partial character (U+FFFD from an incomplete UTF-8
    sequence) nor a tail that could still grow into a stop string.

    >>> safe_length("Hello Us", ("User:",))
    6
    >>> safe_length("caf\\ufffd", ())
    3
    """
    end = len(text)
    while end and text[end - 1] == "\ufffd":
        end -= 1
    hold = 0
    for s in stops:
        for k in range(min(len(s) - 1, end), 0, -1):
            if text[end - k:end] == s[:k]:
                hold = max(hold, k)
                break
    return end - hold
