"""Shared fixtures: the real SmolLM2 tokenizer (converted once from the embedded GGUF) and small helpers."""

from __future__ import annotations

import pytest

from sftpipe.models import load_tokenizer, tiny_model


@pytest.fixture(scope="session", autouse=True)
def _session_eval_cache(tmp_path_factory):
    """A fresh eval cache and tokenized-dataset cache per test session (`$SFTPIPE_EVAL_CACHE`,
    `$SFTPIPE_TOKENIZED_CACHE`, also seen by CLI subprocesses), so no test is served a baseline or a dataset that an
    earlier session cached; the converted models stay in the user's cache root."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SFTPIPE_EVAL_CACHE", str(tmp_path_factory.mktemp("eval-cache")))
        mp.setenv("SFTPIPE_TOKENIZED_CACHE", str(tmp_path_factory.mktemp("tokenized-cache")))
        yield


@pytest.fixture()
def tok():
    """A fresh SmolLM2 tokenizer (renderers set its template and may add tokens, so never share one)."""
    return load_tokenizer("smollm2-135m-instruct")


@pytest.fixture()
def single_thread():
    """torch on one thread for the test: a tiny model's matmuls take microseconds, and on a shared 2-core machine a
    second OpenMP thread only adds wake-up latency (10-30x slower steps under load). Folders of model tests turn it
    on for every test in an autouse fixture of their conftest."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """A local model folder (save_pretrained) with the SmolLM2 tokenizer and a tiny random Llama."""
    folder = tmp_path_factory.mktemp("tiny-model")
    tok = load_tokenizer("smollm2-135m-instruct")
    tiny_model(tok).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder
