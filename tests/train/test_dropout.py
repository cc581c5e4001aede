"""LeanDropout's mask: the keep probability and scaling of nn.Dropout, from a cheaper draw."""

from __future__ import annotations

import doctest

import pytest
import torch

import sftpipe.train.dropout
from sftpipe.train.dropout import keep_mask


@pytest.mark.parametrize("p", [0.05, 0.3, 0.5])
def test_keep_mask_keeps_each_element_with_probability_one_minus_p(p):
    torch.manual_seed(1)
    mask, p_used = keep_mask(torch.Size([512, 1024]), p)
    assert mask.dtype == torch.bool and mask.shape == (512, 1024)
    assert abs(p_used - p) <= 2 ** -16
    assert abs((~mask).float().mean().item() - p) < 0.003  # 524k draws: 3 sigma is < 0.002
    rows = (~mask).float().mean(dim=1)  # no lane of the 64-bit draws is biased: every column phase alike
    phases = [(~mask[:, k::4]).float().mean().item() for k in range(4)]
    assert max(phases) - min(phases) < 0.01 and rows.std().item() < 0.05


def test_doctests():
    result = doctest.testmod(sftpipe.train.dropout)
    assert result.attempted >= 3 and result.failed == 0
