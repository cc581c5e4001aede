"""Message / Conversation: reasoning travels to templates under both names, is written once, is validated."""

from __future__ import annotations

import pytest

from sftpipe.conversation import Conversation, Message, validate_messages
from sftpipe.errors import RecordError


def test_reasoning_reaches_templates_as_reasoning_content_and_thinking():
    m = Message("assistant", "4.", reasoning_content="Two and two.")
    assert m.to_template() == {"role": "assistant", "content": "4.", "reasoning_content": "Two and two.",
                               "thinking": "Two and two."}
    assert "reasoning_content" not in Message("assistant", "4.").to_template()


def test_record_writes_reasoning_once():
    conv = Conversation([Message("user", "2+2?"), Message("assistant", "4.", train=True, reasoning_content="Add.")],
                        {"id": 1})
    assert conv.to_record() == {"id": 1, "messages": [
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4.", "reasoning_content": "Add.", "train": True}]}


@pytest.mark.parametrize("message, problem", [
    (Message("user", "q", reasoning_content="why"), "set on a user message"),
    (Message("assistant", "a", reasoning_content=["why"]), "is list, not a string"),
])
def test_reasoning_is_validated_with_the_message_index(message, problem):
    msgs = [Message("user", "q"), message] if message.role == "assistant" else [message, Message("assistant", "a")]
    with pytest.raises(RecordError, match=problem) as info:
        validate_messages(msgs)
    assert (info.value.reason, info.value.field) == ("bad_reasoning", "reasoning_content")
    assert info.value.index == msgs.index(message)
