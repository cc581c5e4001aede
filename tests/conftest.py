"""Shared fixtures: the real SmolLM2 tokenizer (converted once from the embedded GGUF) and small helpers."""

from __future__ import annotations

import pytest

from sftpipe.models import load_tokenizer


@pytest.fixture()
def tok():
    """A fresh SmolLM2 tokenizer (renderers set its template and may add tokens, so never share one)."""
    return load_tokenizer("smollm2-135m-instruct")
