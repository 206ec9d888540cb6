"""longattn.nn.FastRPB: against the dense bias it stands for, causality, special tokens, 2-D,
gradients, and use on top of the library's attentions."""
import pytest
import torch

import longattn
from longattn.nn import FastRPB


def dense_1d(coeffs, n, causal=False):
    i = torch.arange(n)
    T = coeffs[:, (i[None, :] - i[:, None]) + n - 1]
    return T * torch.ones(n, n, dtype=T.dtype).tril() if causal else T


@pytest.mark.parametrize("kind", ["full", "symmetric"])
@pytest.mark.parametrize("n", [16, 9])  # the full length and a central slice
def test_1d_matches_dense_with_central_slice(kind, n):
    M, H = 16, 3
    rpb = FastRPB(H, M, kind=kind).double()
    with torch.no_grad():
        rpb.weights.normal_()
    v = torch.randn(2, H, n, 5, dtype=torch.float64)
    w = rpb.weights
    if kind == "full":
        coeffs = w[:, M - n: M + n - 1]  # offsets -(n-1) .. n-1 of the 2M - 1 stored
    else:
        coeffs = w[:, torch.arange(-(n - 1), n).abs()]
        assert torch.equal(coeffs, coeffs.flip(-1))  # symmetric: B_ij = B_ji
    torch.testing.assert_close(rpb(v), dense_1d(coeffs, n) @ v, rtol=1e-10, atol=1e-12)


def test_init_is_near_zero_with_a_trend():
    rpb = FastRPB(4, 100)
    w = rpb.weights.detach()
    assert w.shape == (4, 199)
    assert w.abs().max() < 1e-3 + 1e-5  # |r| 1e-5 U(0,1) + 1e-6 N(0,1) with |r| <= 99
    assert w[:, :10].abs().mean() > w[:, 95:104].abs().mean()  # grows with |r|
    assert FastRPB(4, 100, kind="symmetric").weights.shape == (4, 100)


def test_special_tokens_are_left_out():
    H, M, n, s = 2, 12, 10, 1
    rpb = FastRPB(H, M, special_tokens=s).double()
    with torch.no_grad():
        rpb.weights.normal_()
    v = torch.randn(1, H, n, 3, dtype=torch.float64)
    out = rpb(v)
    assert torch.equal(out[:, :, :s], torch.zeros_like(out[:, :, :s]))
    inner = dense_1d(rpb.weights[:, M - (n - s): M + (n - s) - 1], n - s) @ v[:, :, s:]
    torch.testing.assert_close(out[:, :, s:], inner, rtol=1e-10, atol=1e-12)
    v2 = v.clone()
    v2[:, :, 0] += 100.0  # the CLS value reaches no other token
    torch.testing.assert_close(rpb(v2), out)


def test_causal_is_really_causal():
    # The authors' FFT path drops its causal mask (papers.md 3.5); ours must not leak: outputs up
    # to i do not move when keys/values after i change, alone and on top of causal attention.
    H, M, n, i0 = 2, 64, 40, 17
    rpb = FastRPB(H, M, causal=True).double()
    with torch.no_grad():
        rpb.weights.normal_()
    q, k, v = (torch.randn(1, H, n, 8, dtype=torch.float64) for _ in range(3))
    f = lambda q, k, v: longattn.softmax_attention(q, k, v, causal=True) + rpb(v)  # noqa: E731
    y0, b0 = f(q, k, v), rpb(v)
    k2, v2 = k.clone(), v.clone()
    k2[:, :, i0 + 1:] += 5.0
    v2[:, :, i0 + 1:] += 100.0
    y1, b1 = f(q, k2, v2), rpb(v2)
    assert (b0[:, :, : i0 + 1] - b1[:, :, : i0 + 1]).abs().max() < 1e-9
    assert (y0[:, :, : i0 + 1] - y1[:, :, : i0 + 1]).abs().max() < 1e-9
    assert (b0[:, :, i0 + 1] - b1[:, :, i0 + 1]).abs().max() > 1.0  # the change is visible after i0
    torch.testing.assert_close(b0, dense_1d(rpb.weights[:, M - n: M + n - 1], n, causal=True) @ v)


@pytest.mark.parametrize("separate", [False, True])
def test_2d_matches_dense_with_cls(separate):
    H, hh, ww = 2, 3, 4
    rpb = FastRPB(H, 5, two_d=True, height=hh, width=ww, separate_axes=separate).double()
    with torch.no_grad():
        rpb.weights.normal_()
        if separate:
            rpb.col_weights.normal_()
    v = torch.randn(2, H, 1 + hh * ww, 3, dtype=torch.float64)  # CLS + grid
    R, C = rpb.coefficients(hh), rpb.coefficients(ww, rows=False)
    a = torch.arange(hh).repeat_interleave(ww)
    b = torch.arange(ww).repeat(hh)
    Bm = R[:, (a[None, :] - a[:, None]) + hh - 1] + C[:, (b[None, :] - b[:, None]) + ww - 1]
    out = rpb(v)
    torch.testing.assert_close(out[:, :, 1:], Bm @ v[:, :, 1:], rtol=1e-10, atol=1e-12)
    assert torch.equal(out[:, :, 0], torch.zeros_like(out[:, :, 0]))


def test_gradients_fp64():
    H, M, n = 2, 8, 6
    for kwargs in (dict(kind="full"), dict(kind="symmetric", causal=True), dict(two_d=True, height=2, width=3)):
        rpb = FastRPB(H, M, **kwargs).double()
        v = torch.randn(2, H, n, 3, dtype=torch.float64, requires_grad=True)
        mask = torch.tensor([[True] * n, [True] * (n - 2) + [False] * 2])

        # central differences through the module (linear in the weights: exact up to rounding)
        w0 = rpb.weights.detach().clone().normal_()
        with torch.no_grad():
            rpb.weights.copy_(w0)
        out = rpb(v, mask)
        g = torch.randn_like(out)
        gw, gv = torch.autograd.grad(out, (rpb.weights, v), g)
        eps = 1e-6
        for idx in [(0, 0), (1, M - 1), (0, rpb.weights.shape[1] - 1)]:
            with torch.no_grad():
                rpb.weights[idx] += eps
                up = (rpb(v, mask) * g).sum()
                rpb.weights[idx] -= 2 * eps
                dn = (rpb(v, mask) * g).sum()
                rpb.weights[idx] += eps
            assert abs((up - dn).item() / (2 * eps) - gw[idx].item()) < 1e-6
        assert torch.equal(gv[1, :, n - 2:], torch.zeros_like(gv[1, :, n - 2:]))  # masked keys


def test_on_top_of_attentions():
    # out = attention(q, k, v) + B v works with each attention and trains the bias.
    H, n, D = 2, 24, 8
    q, k, v = (torch.randn(1, H, n, D) for _ in range(3))
    rpb = FastRPB(H, 32)
    feats = lambda x: torch.nn.functional.elu(x) + 1  # noqa: E731
    attns = {
        "softmax": lambda q, k, v: longattn.softmax_attention(q, k, v),
        "kernelized_rpe": lambda q, k, v: longattn.kernelized_rpe_attention(
            feats(q), feats(k), v, torch.zeros(H, 2 * n - 1)),
    }
    for name, attn in attns.items():
        rpb.zero_grad()
        out = attn(q, k, v) + rpb(v)
        assert out.shape == (1, H, n, D) and torch.isfinite(out).all(), name
        out.square().sum().backward()
        assert rpb.weights.grad is not None and rpb.weights.grad.abs().sum() > 0, name


def test_bad_configuration():
    with pytest.raises(ValueError, match='kind must be "full" or "symmetric", got "half"'):
        FastRPB(2, 8, kind="half")
    with pytest.raises(ValueError, match="causal is for 1-D"):
        FastRPB(2, 8, two_d=True, height=2, width=2, causal=True)
    with pytest.raises(ValueError, match="9 positions, but the bias covers 8"):
        FastRPB(2, 8)(torch.randn(1, 2, 9, 3))
