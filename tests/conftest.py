"""Shared fixtures: the real SmolLM2 tokenizer (converted once from the embedded GGUF) and small helpers."""

from __future__ import annotations

import pytest

from sftpipe.models import load_tokenizer


@pytest.fixture(scope="session", autouse=True)
def _session_eval_cache(tmp_path_factory):
    """A fresh eval cache per test session (`$SFTPIPE_EVAL_CACHE`, also seen by CLI subprocesses), so no test is
    served a baseline that an earlier session cached; the converted models stay in the user's cache root."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SFTPIPE_EVAL_CACHE", str(tmp_path_factory.mktemp("eval-cache")))
        yield


@pytest.fixture()
def tok():
    """A fresh SmolLM2 tokenizer (renderers set its template and may add tokens, so never share one)."""
    return load_tokenizer("smollm2-135m-instruct")
