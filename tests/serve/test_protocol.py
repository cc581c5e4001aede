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
])
def test_bad_fields_are_named(body, param):
    with pytest.raises(ApiError) as err:
        decode_request(body, ServeConfig())
    assert err.value.status == 400 and err.value.param == param
