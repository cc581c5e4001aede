"""Request decoding without a server: defaults (loopback, greedy), content parts joined with nothing, doctests."""

from __future__ import annotations

import doctest

import pytest

import sftpipe.generate.stops
import sftpipe.serve.protocol
from sftpipe.config import load_config
from sftpipe.config.serve import ServeConfig
from sftpipe.serve.protocol import ApiError, decode_request


def test_doctests():
    assert doctest.testmod(sftpipe.serve.protocol).failed == 0
    assert doctest.testmod(sftpipe.generate.stops).failed == 0


def test_defaults_are_loopback_and_greedy():
    assert ServeConfig().host == "127.0.0.1" and load_config().serve.host == "127.0.0.1"
    params = decode_request({"messages": [{"role": "user", "content": [{"type": "text", "text": "a"},
                                                                       {"type": "text", "text": "b"}]}]},
                            ServeConfig())
    assert params.messages == [{"role": "user", "content": "ab"}]  # the training render joins parts with nothing
    assert (params.temperature, params.max_tokens, params.stop, params.stream) == (0.0, None, (), False)


@pytest.mark.parametrize("body,param", [
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "user", "content": "x"}], "n": 2}, "n"),
    ({"messages": [{"role": "user", "content": "x"}], "max_completion_tokens": 0}, "max_completion_tokens"),
    ({"messages": [{"role": "user", "content": "x"}], "seed": -1}, "seed"),
    ({"messages": [{"role": "user", "content": "x"}], "top_p": 0}, "top_p"),
    ({"messages": ["hi"]}, "messages[0]"),
    ({"messages": [{"role": "user", "content": "x"}], "presence_penalty": 0.5}, "presence_penalty"),
    ({"messages": [{"role": "user", "content": "x"}], "frequency_penalty": -1}, "frequency_penalty"),
    ({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "xml"}}, "response_format"),
    ({"messages": [{"role": "user", "content": "x"}], "logit_bias": {"5": 10}}, "logit_bias"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id"),
    ({"messages": [{"role": "function", "content": "x"}]}, "messages[0].role"),
])
def test_bad_fields_are_named(body, param):
    with pytest.raises(ApiError) as err:
        decode_request(body, ServeConfig())
    assert err.value.status == 400 and err.value.param == param


def test_null_means_not_set_and_developer_means_system():
    """What OpenAI and vLLM accept: optional fields sent as JSON null, and the `developer` role current clients send
    for system instructions."""
    params = decode_request({"messages": [{"role": "developer", "content": "Be brief."},
                                          {"role": "user", "content": "x"}],
                             "n": None, "max_completion_tokens": None, "max_tokens": 5, "temperature": None,
                             "presence_penalty": 0, "frequency_penalty": None, "response_format": {"type": "text"},
                             "stop": None, "seed": None, "stream_options": None, "tools": None}, ServeConfig())
    assert params.messages[0] == {"role": "system", "content": "Be brief."}
    assert (params.max_tokens, params.temperature, params.stop, params.seed) == (5, 0.0, (), None)
    assert decode_request({"messages": [{"role": "user", "content": "x"}], "max_completion_tokens": 7,
                           "max_tokens": 5}, ServeConfig()).max_tokens == 7  # the newer name wins when both are set
