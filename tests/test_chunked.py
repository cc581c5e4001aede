"""The chunked output-layer kernel equals the plain lm_head + log-softmax in value and in gradient (for the hidden
states and for the output layer's weight), for both of its uses: SFT's summed token NLL and DPO's per-sequence
completion log-probs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sftpipe.chunked import head_logprobs
from sftpipe.labels import IGNORE_INDEX

ROWS, HIDDEN, VOCAB, CHUNK = 37, 24, 101, 8  # several chunks, the last one short


def _setup(train_weight: bool, seed: int = 0):
    torch.manual_seed(seed)
    head = torch.nn.Linear(HIDDEN, VOCAB, bias=False).double()
    head.weight.requires_grad_(train_weight)
    hidden = torch.randn(ROWS, HIDDEN, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, VOCAB, (ROWS,))
    return head, hidden, targets


def _grads(loss: torch.Tensor, head: torch.nn.Linear, hidden: torch.Tensor) -> tuple:
    hidden.grad, head.weight.grad = None, None
    loss.backward()
    return loss.detach(), hidden.grad, head.weight.grad


def _sft(head, hidden, targets, chunked: bool) -> torch.Tensor:
    if chunked:
        return -head_logprobs(head, hidden, targets, CHUNK).sum()
    return F.cross_entropy(head(hidden).float(), targets, ignore_index=IGNORE_INDEX, reduction="sum")


def _dpo(head, hidden, targets, seq, chunked: bool) -> torch.Tensor:
    """A DPO-shaped loss: per-sequence summed log-probs, chosen vs rejected through a log-sigmoid."""
    if chunked:
        lp = head_logprobs(head, hidden, targets, CHUNK)
    else:
        lp = torch.log_softmax(head(hidden).float(), dim=-1).gather(1, targets[:, None])[:, 0]
    per_seq = torch.zeros(4, dtype=lp.dtype).index_add(0, seq, lp)
    return -F.logsigmoid(0.1 * (per_seq[:2] - per_seq[2:])).sum()


@pytest.mark.parametrize("train_weight", [False, True], ids=["frozen-head", "trained-head"])
def test_sft_token_nll_equals_plain_cross_entropy(train_weight):
    head, hidden, targets = _setup(train_weight)
    targets[[0, 1, 9, 30]] = IGNORE_INDEX  # prompt positions: no loss, no gradient
    chunked = _grads(_sft(head, hidden, targets, True), head, hidden)
    plain = _grads(_sft(head, hidden, targets, False), head, hidden)
    torch.testing.assert_close(chunked[0].double(), plain[0].double(), rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(chunked[1], plain[1], rtol=1e-5, atol=1e-6)
    assert chunked[1][[0, 1, 9, 30]].abs().max() == 0
    if train_weight:
        torch.testing.assert_close(chunked[2], plain[2], rtol=1e-5, atol=1e-6)
    else:
        assert chunked[2] is None and plain[2] is None


@pytest.mark.parametrize("train_weight", [False, True], ids=["frozen-head", "trained-head"])
def test_dpo_sequence_logps_equal_plain_log_softmax(train_weight):
    head, hidden, targets = _setup(train_weight, seed=1)
    seq = torch.tensor([k * 4 // ROWS for k in range(ROWS)])  # four sequences of completion rows
    chunked = _grads(_dpo(head, hidden, targets, seq, True), head, hidden)
    plain = _grads(_dpo(head, hidden, targets, seq, False), head, hidden)
    torch.testing.assert_close(chunked[0].double(), plain[0].double(), rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(chunked[1], plain[1], rtol=1e-5, atol=1e-6)
    if train_weight:
        torch.testing.assert_close(chunked[2], plain[2], rtol=1e-5, atol=1e-6)


def test_ignored_rows_score_zero_and_no_grad_keeps_no_graph():
    head, hidden, targets = _setup(True)
    targets[3] = IGNORE_INDEX
    lp = head_logprobs(head, hidden, targets, CHUNK)
    assert lp[3] == 0 and lp.dtype == torch.float32 and (lp[torch.arange(ROWS) != 3] < 0).all()
    with torch.no_grad():
        assert not head_logprobs(head, hidden, targets, CHUNK).requires_grad
