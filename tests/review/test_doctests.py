"""The review package's doctests (stratified sampling, verdict mapping, pair winners, kappa, alpha) run in CI."""

from __future__ import annotations

import doctest

import pytest

from sftpipe.review import build, export, stats, store


@pytest.mark.parametrize("module", [build, export, stats, store])
def test_doctests(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
