"""Generation tests run single-threaded (tests/conftest.py's `single_thread` says why)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _single_thread(single_thread):
    """Every test here runs torch on one thread (tests/conftest.py says why)."""
