"""kernelized_attention(..., rel_bias=b): Luo et al.'s RPE for every feature map, causal and not,
with padding masks, against a dense fp64 formula; fp64 gradients; agreement with softmax."""
import itertools
import math

import pytest
import torch

import longattn


def features(x, feature_map, omega=None):
    """The feature maps, unstabilised (the stabilising shifts cancel when eps = 0)."""
    if feature_map == "elu":
        return torch.nn.functional.elu(x) + 1
    if feature_map == "relu":
        return torch.relu(x)
    if feature_map == "sikf":
        return torch.exp(x)
    u = x @ omega.to(x.dtype).T - 0.5 * (x * x).sum(-1, keepdim=True)
    return torch.exp(u) / math.sqrt(omega.shape[0])


def dense(q, k, v, b, feature_map, omega=None, causal=False, mask=None):
    """z_i = sum_j e^{b[j-i]} phi(q_i).phi(k_j) v_j / sum_j (same), zero rows stay zero (fp64)."""
    q, k, v, b = q.double(), k.double(), v.double(), b.double()
    N = q.shape[2]
    i = torch.arange(N)
    W = b.exp()[:, (i[None, :] - i[:, None]) + N - 1]
    if causal:
        W = W * torch.ones(N, N, dtype=W.dtype).tril()
    S = features(q, feature_map, omega) @ features(k, feature_map, omega).transpose(-1, -2) * W
    if mask is not None:
        S = S * mask[:, None, None, :].double()
    den = S.sum(-1, keepdim=True)
    return torch.where(den > 0, S @ v / den, torch.zeros((), dtype=torch.float64))


MAPS = ["elu", "relu", "sikf", "favor"]


@pytest.mark.parametrize("feature_map,causal", list(itertools.product(MAPS, [False, True])))
def test_matches_dense_formula(feature_map, causal):
    B, H, N, D, Dv = 2, 3, 33, 6, 5
    q, k = 0.5 * torch.randn(B, H, N, D), 0.5 * torch.randn(B, H, N, D)
    v, b = torch.randn(B, H, N, Dv), torch.randn(H, 2 * N - 1)
    omega = longattn.random_features(16, D, seed=3) if feature_map == "favor" else None
    mask = torch.ones(B, N, dtype=torch.bool)
    mask[1, ::4] = False
    out = longattn.kernelized_attention(q, k, v, feature_map=feature_map, causal=causal,
                                        key_padding_mask=mask, projection=omega, eps=0.0, rel_bias=b)
    ref = dense(q, k, v, b, feature_map, omega, causal, mask)
    # float32 throughout; relu rows can have tiny denominators, hence the looser atol there.
    torch.testing.assert_close(out.double(), ref, rtol=2e-4, atol=2e-4 if feature_map != "relu" else 2e-3)


@pytest.mark.parametrize("feature_map,causal", list(itertools.product(["elu", "sikf", "favor"], [False, True])))
def test_gradcheck_fp64(feature_map, causal):
    B, H, N, D, Dv = 1, 2, 7, 3, 2
    q = (0.5 * torch.randn(B, H, N, D, dtype=torch.float64)).requires_grad_()
    k = (0.5 * torch.randn(B, H, N, D, dtype=torch.float64)).requires_grad_()
    v = torch.randn(B, H, N, Dv, dtype=torch.float64, requires_grad=True)
    b = torch.randn(H, 2 * N - 1, dtype=torch.float64, requires_grad=True)
    omega = longattn.random_features(5, D, seed=1, dtype=torch.float64) if feature_map == "favor" else None
    mask = torch.tensor([[True] * (N - 2) + [False, True]])
    f = lambda q, k, v, b: longattn.kernelized_attention(  # noqa: E731
        q, k, v, feature_map=feature_map, causal=causal, key_padding_mask=mask, projection=omega,
        rel_bias=b)
    assert torch.autograd.gradcheck(f, (q, k, v, b))


def test_zero_bias_equals_plain_kernelized_attention():
    # b = 0 weighs every key by 1: the FFT path must agree with the linear-time kernel.
    q, k, v = torch.randn(2, 2, 50, 8), torch.randn(2, 2, 50, 8), torch.randn(2, 2, 50, 4)
    for causal in (False, True):
        plain = longattn.kernelized_attention(q, k, v, feature_map="elu", causal=causal, eps=0.0)
        rpe = longattn.kernelized_attention(q, k, v, feature_map="elu", causal=causal, eps=0.0,
                                            rel_bias=torch.zeros(2, 99))
        torch.testing.assert_close(rpe, plain, rtol=1e-4, atol=1e-5)


def test_causal_does_not_leak():
    N, i0 = 40, 15
    q, k, v = torch.randn(1, 2, N, 4, dtype=torch.float64), torch.randn(1, 2, N, 4, dtype=torch.float64), torch.randn(1, 2, N, 3, dtype=torch.float64)
    b = torch.randn(2, 2 * N - 1, dtype=torch.float64)
    f = lambda k, v: longattn.kernelized_attention(q, k, v, feature_map="elu", causal=True, rel_bias=b)  # noqa: E731
    z0 = f(k, v)
    k2, v2 = k.clone(), v.clone()
    k2[:, :, i0 + 1:] *= 3.0
    v2[:, :, i0 + 1:] += 10.0
    z1 = f(k2, v2)
    assert (z0[:, :, : i0 + 1] - z1[:, :, : i0 + 1]).abs().max() < 1e-9


def test_bad_rel_bias():
    q = torch.randn(1, 2, 5, 3)
    with pytest.raises(RuntimeError, match=r"kernelized_attention: rel_bias must have shape \[H, 2N-1\] = \[2, 9\], got \[2, 8\]"):
        longattn.kernelized_attention(q, q, q, feature_map="elu", rel_bias=torch.randn(2, 8))
    with pytest.raises(RuntimeError, match="rel_bias needs Nq == Nk"):
        longattn.kernelized_attention(q, torch.randn(1, 2, 6, 3), torch.randn(1, 2, 6, 3),
                                      feature_map="elu", rel_bias=torch.randn(2, 9))
