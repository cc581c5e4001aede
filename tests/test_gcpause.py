"""The collector pause restores the collector's state, also when the block raises."""

from __future__ import annotations

import gc

import pytest

from sftpipe.gcpause import no_cyclic_gc


def test_pause_restores_the_previous_state():
    assert gc.isenabled()
    with no_cyclic_gc():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(ValueError), no_cyclic_gc():
        raise ValueError("boom")
    assert gc.isenabled()
    gc.disable()
    try:
        with no_cyclic_gc():
            pass
        assert not gc.isenabled()  # a caller that had it off keeps it off
    finally:
        gc.enable()


def test_build_examples_leaves_the_collector_on(monkeypatch):
    from sftpipe.conversation import Conversation, Message
    from sftpipe.dataset import build_examples
    from sftpipe.models import load_tokenizer
    from sftpipe.render import ChatRenderer
    from sftpipe.templates import load_template

    tok = load_tokenizer("smollm2-135m-instruct")
    renderer = ChatRenderer(tok, load_template("model", tok))
    seen = []
    original = renderer.render_batch
    monkeypatch.setattr(renderer, "render_batch", lambda convs: seen.append(gc.isenabled()) or original(convs))
    examples, _, _ = build_examples([Conversation([Message("user", "hi"), Message("assistant", "hello")])],
                                    renderer, max_length=64)
    assert len(examples) == 1 and seen == [False] and gc.isenabled()
