"""Sequence-parallel kernelized attention, Toeplitz product and YOSO against the single-process
operators on the gathered sequence, on 2 and 4 Gloo processes."""
import math

import pytest
import torch

import dist_harness


def _slice(N, P, r):
    L = math.ceil(N / P)
    return slice(min(r * L, N), min((r + 1) * L, N))


def _tol(dtype):
    return dict(rtol=1e-9, atol=1e-10) if dtype == torch.float64 else dict(rtol=2e-4, atol=2e-5)


def _kernelized_body(rank, P, N, causal, fm, with_mask, dtype, chunk):
    import longattn
    import longattn.distributed as ld
    gen = torch.Generator().manual_seed(7)
    B, H, D, Dv = 2, 2, 6, 5
    q, k = (torch.randn(B, H, N, D, generator=gen, dtype=dtype) for _ in range(2))
    v = torch.randn(B, H, N, Dv, generator=gen, dtype=dtype)
    w = torch.randn(B, H, N, Dv, generator=gen, dtype=dtype)
    mask = None
    if with_mask:
        mask = torch.rand(B, N, generator=gen) > 0.3
        mask[-1, :] = False
    proj = None
    if fm == "favor":
        proj = longattn.random_features(8, D, seed=3, heads=H, dtype=dtype)
        q, k = q * D ** -0.25, k * D ** -0.25
    # eps large enough that the stabilisers matter: the sums must use the same maxima
    eps = 1e-2
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    ref = longattn.kernelized_attention(*leaves, feature_map=fm, causal=causal, key_padding_mask=mask,
                                        projection=proj, eps=eps)
    (ref * w).sum().backward()
    s = _slice(N, P, rank)
    if with_mask:  # a masked key takes part in nothing, NaN included (given to ours only: the
        # single-process operator does not meet that convention yet, see docs/distributed.md)
        keep = mask[:, None, :, None]
        k, v = torch.where(keep, k, float("nan")), torch.where(keep, v, float("nan"))
    mine = [t[:, :, s].clone().requires_grad_() for t in (q, k, v)]
    out = ld.kernelized_attention(*mine, feature_map=fm, causal=causal, projection=proj, eps=eps,
                                  key_padding_mask=None if mask is None else mask[:, s].contiguous(),
                                  chunk=chunk)
    (out * w[:, :, s]).sum().backward()
    tol = _tol(dtype)
    torch.testing.assert_close(out, ref[:, :, s].detach(), **tol)
    for a, b in zip(mine, leaves):
        torch.testing.assert_close(a.grad, b.grad[:, :, s], **tol)


KERNELIZED_CASES = {  # N, causal, feature map, with_mask, dtype, chunk
    2: [(37, False, "sikf", True, torch.float64, 8), (37, True, "sikf", True, torch.float64, 8),
        (33, True, "elu", True, torch.float64, 16), (33, True, "favor", False, torch.float32, 8)],
    4: [(45, True, "sikf", False, torch.float64, 5), (45, True, "favor", True, torch.float64, 4),
        (30, False, "favor", False, torch.float64, 4), (33, False, "relu", True, torch.float64, 16),
        (6, True, "sikf", True, torch.float64, 2),  # a rank with no token
        (64, True, "sikf", True, torch.float32, 8)],
}


def _toeplitz_body(rank, P, N, causal, dtype, path):
    import longattn
    import longattn.distributed as ld
    gen = torch.Generator().manual_seed(11)
    B, H, C = 2, 3, 4
    x = torch.randn(B, H, N, C, generator=gen, dtype=dtype)
    c = torch.randn(H, 2 * N - 1, generator=gen, dtype=dtype)
    w = torch.randn(B, H, N, C, generator=gen, dtype=dtype)
    cl, xl = c.clone().requires_grad_(), x.clone().requires_grad_()
    ref = longattn.toeplitz_matmul(cl, xl, causal=causal)
    (ref * w).sum().backward()
    s = _slice(N, P, rank)
    cm, xm = c.clone().requires_grad_(), x[:, :, s].clone().requires_grad_()
    out = ld.toeplitz_matmul(cm, xm, causal=causal, path=path)
    (out * w[:, :, s]).sum().backward()
    tol = _tol(dtype)
    torch.testing.assert_close(out, ref[:, :, s].detach(), **tol)
    torch.testing.assert_close(xm.grad, xl.grad[:, :, s], **tol)
    torch.testing.assert_close(cm.grad, cl.grad, **tol)


TOEPLITZ_CASES = {  # N, causal, dtype, path
    2: [(41, False, torch.float64, "auto"), (41, True, torch.float32, "direct")],
    4: [(41, True, torch.float64, "fft"), (50, False, torch.float32, "direct"),
        (7, True, torch.float64, "auto")],
}


def _yoso_body(rank, P, N, with_mask, dtype, hashing):
    import longattn
    import longattn.distributed as ld
    gen = torch.Generator().manual_seed(5)
    B, H, D, Dv = 2, 2, 8, 3
    q, k = (torch.randn(B, H, N, D, generator=gen, dtype=dtype) for _ in range(2))
    v = torch.randn(B, H, N, Dv, generator=gen, dtype=dtype)
    w = torch.randn(B, H, N, Dv, generator=gen, dtype=dtype)
    mask = None
    if with_mask:
        mask = torch.rand(B, N, generator=gen) > 0.3
    kw = dict(hash_bits=3, num_hashes=4, seed=21, hashing=hashing)
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    ref = longattn.yoso_attention(*leaves, key_padding_mask=mask, **kw)
    (ref * w).sum().backward()
    s = _slice(N, P, rank)
    mine = [t[:, :, s].clone().requires_grad_() for t in (q, k, v)]
    out = ld.yoso_attention(*mine, key_padding_mask=None if mask is None else mask[:, s].contiguous(), **kw)
    (out * w[:, :, s]).sum().backward()
    tol = _tol(dtype)
    assert ref.abs().sum() > 0  # collisions happen: the check is not of zeros
    torch.testing.assert_close(out, ref[:, :, s].detach(), **tol)
    for a, b in zip(mine, leaves):
        torch.testing.assert_close(a.grad, b.grad[:, :, s], **tol)


YOSO_CASES = {  # N, with_mask, dtype, hashing
    2: [(27, True, torch.float64, "gaussian")],
    4: [(30, False, torch.float64, "hadamard"), (30, True, torch.float32, "gaussian")],
}


def _all_cases(rank, P):
    for case in KERNELIZED_CASES[P]:
        _kernelized_body(rank, P, *case)
    for case in TOEPLITZ_CASES[P]:
        _toeplitz_body(rank, P, *case)
    for case in YOSO_CASES[P]:
        _yoso_body(rank, P, *case)


@pytest.mark.parametrize("P", [2, 4])
def test_kernelized_toeplitz_and_yoso_match_single_process(P):
    """Every case of KERNELIZED_CASES, TOEPLITZ_CASES and YOSO_CASES on P processes."""
    dist_harness.check(P, _all_cases, timeout=240)
