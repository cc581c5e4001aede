"""Generation tests run single-threaded: the tiny model's matmuls are microseconds, and on a shared 2-core machine
a second OpenMP thread only adds wake-up latency."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
