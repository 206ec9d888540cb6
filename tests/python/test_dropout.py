"""longattn.dropout and longattn.nn.Dropout: gradients, the recomputed mask, seeds, errors."""
import math

import pytest
import torch

import longattn
from longattn.nn import Dropout


def test_gradient_is_the_same_mask_fp64():
    x = torch.randn(3, 5, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: longattn.dropout(t, 0.3, 11), (x,))
    assert torch.autograd.gradgradcheck(lambda t: longattn.dropout(t, 0.3, 11), (x,))
    y = longattn.dropout(x, 0.3, 11)
    (g,) = torch.autograd.grad(y.sum(), x)
    kept = y != 0
    scale = 65536 / (65536 - round(0.3 * 65536))
    torch.testing.assert_close(g[kept], torch.full_like(g[kept], scale))
    assert torch.all(g[~kept] == 0)


def test_drop_rate_and_expectation():
    n = 1 << 20
    x = torch.ones(n)
    y = longattn.dropout(x, 0.25, 3)
    q = round(0.25 * 65536) / 65536
    dropped = int((y == 0).sum())
    assert abs(dropped - n * q) < 6 * math.sqrt(n * q * (1 - q))  # binomial, 6 sd
    # E[y] = 1: the mean of n scaled Bernoulli(1 - q) has sd sqrt(q / ((1 - q) n)).
    assert abs(float(y.mean()) - 1) < 6 * math.sqrt(q / ((1 - q) * n))


def test_same_seed_same_mask_any_layout():
    x = torch.randn(64, 33)
    a = longattn.dropout(x, 0.5, 5)
    assert torch.equal(a, longattn.dropout(x.clone(), 0.5, 5))
    assert not torch.equal(a, longattn.dropout(x, 0.5, 6))
    # A non-contiguous input is read in its logical (row-major) order.
    xt = x.t().contiguous().t()
    assert torch.equal(longattn.dropout(xt, 0.5, 5), a)


def test_module_eval_identity_and_seeded_training():
    m = Dropout(0.1)
    x = torch.randn(4, 100)
    assert m.eval()(x) is x
    m.train()
    torch.manual_seed(0)
    a = m(x)
    torch.manual_seed(0)
    assert torch.equal(m(x), a)
    assert not torch.equal(m(x), a)  # the next call draws a new seed


def test_errors_name_the_problem():
    with pytest.raises(RuntimeError, match=r"longattn.dropout: p must be in \[0, 1 - 2\^-16\] .*, got 1"):
        longattn.dropout(torch.ones(3), 1.0, 0)
    with pytest.raises(RuntimeError, match="x must be float32, float64, bfloat16 or float16"):
        longattn.dropout(torch.ones(3, dtype=torch.int32), 0.1, 0)
    with pytest.raises(ValueError, match="p must be in"):
        Dropout(-0.1)
