import torch
from transformers.cache_utils import DynamicLayer

from sftpipe.generate.kv import SlackLayer


def _kv(rows, cols, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, 2, cols, 4, generator=g), torch.randn(rows, 2, cols, 4, generator=g)


def test_updates_past_the_spare_room_equal_a_plain_layer():
    keys, values = _kv(3, 5, 0)
    plain, slack = DynamicLayer(), SlackLayer([(keys, values)], 5, spare=2)
    plain.update(keys, values)
    for step in range(7):  # grows the buffers more than once
        k, v = _kv(3, 1 + step % 2, 10 + step)
        want, got = plain.update(k, v), slack.update(k, v)
        assert torch.equal(want[0], got[0]) and torch.equal(want[1], got[1])
    assert slack.keys.shape == plain.keys.shape


def test_parts_are_right_aligned_and_select_keeps_rows_and_drops_lead_columns():
    (k1, v1), (k2, v2) = _kv(2, 6, 1), _kv(1, 4, 2)
    layer = SlackLayer([(k1, v1), (k2, v2)], 6)
    assert torch.equal(layer.keys[:2], k1) and torch.equal(layer.values[2, :, 2:], v2[0])
    assert not layer.keys[2, :, :2].any()  # the shorter part's missing left columns are zeros
    layer.select(torch.tensor([2, 0]), 2)
    assert torch.equal(layer.keys[0], k2[0]) and torch.equal(layer.values[1], v1[0, :, 2:])
    k, v = _kv(2, 1, 3)
    layer.update(k, v)
    assert layer.keys.shape == (2, 2, 5, 4) and torch.equal(layer.keys[:, :, -1:], k)
