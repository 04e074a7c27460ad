"""Behavioural tests for the (loss_sum, n) loss helpers and their mixing."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lit_tf.objectives import IGNORE_INDEX, masked_accuracy, mlm_loss, nsp_loss, weighted_sum


def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def test_ignore_index_value():
    assert IGNORE_INDEX == -100


def test_mlm_loss_matches_cross_entropy_sum():
    g = _gen()
    logits = torch.randn(40, 17, generator=g, requires_grad=True)
    targets = torch.randint(0, 17, (40,), generator=g)
    targets[::3] = IGNORE_INDEX
    loss_sum, n = mlm_loss(logits, targets)
    keep = targets != IGNORE_INDEX
    expected = F.cross_entropy(logits[keep], targets[keep], reduction="sum")
    torch.testing.assert_close(loss_sum, expected)
    assert isinstance(n, torch.Tensor) and n.item() == keep.sum().item() == 26
    loss_sum.backward()
    assert logits.grad is not None and logits.grad[~keep].abs().sum() == 0


def test_mlm_loss_upcasts_low_precision_logits():
    g = _gen()
    logits = torch.randn(8, 50, generator=g).to(torch.bfloat16)
    targets = torch.randint(0, 50, (8,), generator=g)
    loss_sum, _ = mlm_loss(logits, targets)
    assert loss_sum.dtype == torch.float32
    torch.testing.assert_close(loss_sum, F.cross_entropy(logits.float(), targets, reduction="sum"))


def test_mlm_loss_accepts_batch_time_shapes():
    g = _gen()
    logits = torch.randn(2, 5, 11, generator=g)
    targets = torch.randint(0, 11, (2, 5), generator=g)
    a = mlm_loss(logits, targets)
    b = mlm_loss(logits.reshape(10, 11), targets.reshape(10))
    torch.testing.assert_close(a[0], b[0])
    assert a[1].item() == 10


def test_empty_targets_keep_grad_path():
    logits = torch.randn(0, 9, requires_grad=True)
    loss_sum, n = mlm_loss(logits, torch.zeros(0, dtype=torch.long))
    assert loss_sum.item() == 0.0 and n.item() == 0
    assert loss_sum.requires_grad
    loss_sum.backward()
    assert logits.grad is not None

    # All targets ignored: zero loss, zero count, still differentiable.
    logits = torch.randn(4, 9, requires_grad=True)
    loss_sum, n = mlm_loss(logits, torch.full((4,), IGNORE_INDEX))
    assert loss_sum.item() == 0.0 and n.item() == 0 and loss_sum.requires_grad
    loss_sum.backward()
    # ... and mixes to zero rather than NaN.
    assert weighted_sum({"mlm": (loss_sum, n)}, {"mlm": 1.0}).item() == 0.0


def test_nsp_loss_and_accuracy():
    logits = torch.tensor([[2.0, 0.0], [0.0, 3.0], [1.0, 0.5], [0.0, 1.0]])
    labels = torch.tensor([0, 1, 1, IGNORE_INDEX])
    loss_sum, n = nsp_loss(logits, labels)
    expected = sum(-torch.log_softmax(logits[i], -1)[labels[i]].item() for i in range(3))
    assert n.item() == 3
    assert math.isclose(loss_sum.item(), expected, rel_tol=1e-6)
    correct, total = masked_accuracy(logits, labels)
    assert (correct.item(), total.item()) == (2, 3)


def test_weighted_sum_arithmetic():
    terms = {
        "mlm": (torch.tensor(12.0), torch.tensor(4)),  # mean 3.0
        "nsp": (torch.tensor(1.5), torch.tensor(3)),  # mean 0.5
        "tlm": (torch.tensor(7.0), torch.tensor(0)),  # n clamped to 1 -> 7.0
    }
    out = weighted_sum(terms, {"mlm": 1.0, "nsp": 2.0})
    assert math.isclose(out.item(), 3.0 + 1.0)
    out = weighted_sum(terms, {"mlm": 0.5, "tlm": 0.1})
    assert math.isclose(out.item(), 1.5 + 0.7, rel_tol=1e-6)
    # Plain int counts work too.
    assert math.isclose(weighted_sum({"a": (torch.tensor(6.0), 2)}, {"a": 1.0}).item(), 3.0)


def test_weighted_sum_propagates_gradients():
    x = torch.tensor(2.0, requires_grad=True)
    out = weighted_sum({"a": (x * 4, torch.tensor(2)), "b": (x, torch.tensor(1))}, {"a": 1.0, "b": 3.0})
    out.backward()
    assert math.isclose(x.grad.item(), 4 / 2 + 3.0)


def test_weighted_sum_unknown_key():
    terms = {"mlm": (torch.tensor(1.0), torch.tensor(1)), "nsp": (torch.tensor(1.0), torch.tensor(1))}
    with pytest.raises(KeyError) as err:
        weighted_sum(terms, {"mlm": 1.0, "sop": 1.0})
    msg = str(err.value)
    assert "sop" in msg and "mlm" in msg and "nsp" in msg
    with pytest.raises(ValueError):
        weighted_sum(terms, {})
