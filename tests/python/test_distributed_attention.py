"""Sequence-parallel softmax and Shatter attention (ring) against the single-process operators
on the gathered sequence, on 2 and 4 Gloo processes."""
import math

import pytest
import torch

import dist_harness


def _slice(N, P, r):
    L = math.ceil(N / P)
    return slice(min(r * L, N), min((r + 1) * L, N))


def _mask(B, N, gen):
    m = torch.rand(B, N, generator=gen) > 0.3
    m[:, 0] = True
    m[-1, :] = False  # a sequence with no key at all: zeros, never NaN
    return m


def _tol(dtype):
    return dict(rtol=1e-10, atol=1e-10) if dtype == torch.float64 else dict(rtol=2e-4, atol=2e-5)


def _softmax_body(rank, P, N, causal, with_mask, with_bias, dtype):
    import longattn
    import longattn.distributed as ld
    gen = torch.Generator().manual_seed(1234)
    B, H, D, Dv = 2, 2, 8, 5
    q, k = (torch.randn(B, H, N, D, generator=gen, dtype=dtype) for _ in range(2))
    v = torch.randn(B, H, N, Dv, generator=gen, dtype=dtype)
    w = torch.randn(B, H, N, Dv, generator=gen, dtype=dtype)
    mask = _mask(B, N, gen) if with_mask else None
    bias = torch.randn(H, 2 * N - 1, generator=gen, dtype=dtype) if with_bias else None
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    rb = bias.clone().requires_grad_() if with_bias else None
    ref = longattn.softmax_attention(*leaves, causal=causal, key_padding_mask=mask, rel_bias=rb)
    (ref * w).sum().backward()
    s = _slice(N, P, rank)
    mine = [t[:, :, s].clone().requires_grad_() for t in (q, k, v)]
    db = bias.clone().requires_grad_() if with_bias else None
    out = ld.softmax_attention(*mine, causal=causal, rel_bias=db,
                               key_padding_mask=None if mask is None else mask[:, s].contiguous())
    (out * w[:, :, s]).sum().backward()
    tol = _tol(dtype)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, ref[:, :, s].detach(), **tol)
    for a, b in zip(mine, leaves):
        torch.testing.assert_close(a.grad, b.grad[:, :, s], **tol)
    if with_bias:
        torch.testing.assert_close(db.grad, rb.grad, **tol)


SOFTMAX_CASES = {  # N, causal, with_mask, with_bias, dtype (one process group runs them all)
    2: [(37, False, True, True, torch.float64), (37, True, True, True, torch.float64),
        (40, True, False, False, torch.float32)],
    4: [(50, True, True, True, torch.float64), (50, False, False, True, torch.float64),
        (64, True, False, False, torch.float32),
        (6, True, True, True, torch.float64)],  # ranks with fewer tokens than their share, one with none
}


def _shatter_body(rank, P, N, causal, activation, dtype):
    import longattn
    import longattn.distributed as ld
    gen = torch.Generator().manual_seed(99)
    B, D, Pp, Dv = 2, 6, 3, 4
    q, k = (torch.randn(B, N, D, generator=gen, dtype=dtype) for _ in range(2))
    v = torch.randn(B, Pp, N, Dv, generator=gen, dtype=dtype)
    w = torch.randn(B, N, Dv, generator=gen, dtype=dtype)
    part = torch.softmax(torch.randn(Pp, 2 * N - 1, generator=gen, dtype=dtype), 0)
    mask = _mask(B, N, gen)
    leaves = [t.clone().requires_grad_() for t in (q, k, v, part)]
    ref = longattn.shatter_attention(*leaves, activation=activation, causal=causal, key_padding_mask=mask)
    (ref * w).sum().backward()
    s = _slice(N, P, rank)
    mine = [q[:, s].clone().requires_grad_(), k[:, s].clone().requires_grad_(),
            v[:, :, s].clone().requires_grad_(), part.clone().requires_grad_()]
    out = ld.shatter_attention(*mine, activation=activation, causal=causal,
                               key_padding_mask=mask[:, s].contiguous())
    (out * w[:, s]).sum().backward()
    tol = _tol(dtype)
    torch.testing.assert_close(out, ref[:, s].detach(), **tol)
    torch.testing.assert_close(mine[0].grad, leaves[0].grad[:, s], **tol)
    torch.testing.assert_close(mine[1].grad, leaves[1].grad[:, s], **tol)
    torch.testing.assert_close(mine[2].grad, leaves[2].grad[:, :, s], **tol)
    torch.testing.assert_close(mine[3].grad, leaves[3].grad, **tol)


SHATTER_CASES = {  # N, causal, activation, dtype
    2: [(29, False, "softmax", torch.float64), (40, True, "softmax", torch.float32)],
    4: [(29, True, "softmax", torch.float64), (31, True, "sigmoid", torch.float64),
        (30, False, "sigmoid", torch.float64)],
}


def _all_cases(rank, P):
    for case in SOFTMAX_CASES[P]:
        _softmax_body(rank, P, *case)
    for case in SHATTER_CASES[P]:
        _shatter_body(rank, P, *case)


@pytest.mark.parametrize("P", [2, 4])
def test_ring_softmax_and_shatter_match_single_process(P):
    """Every case of SOFTMAX_CASES and SHATTER_CASES on P processes."""
    dist_harness.check(P, _all_cases, timeout=240)


def _failing_body(rank, P):
    import longattn.distributed as ld
    if rank == 1:
        raise RuntimeError("rank 1 fails on purpose")
    q = torch.randn(1, 1, 4, 4)
    ld.softmax_attention(q, q, q)


def test_a_failing_rank_ends_the_others():
    errors, hung = dist_harness.run(2, _failing_body, timeout=150)  # start-up + the 30 s group timeout
    assert not hung, "a rank hung after its peer failed"
    ranks = [r for r, _ in errors]
    assert ranks == [0, 1], errors
    assert "fails on purpose" in errors[1][1]


def _mismatch_body(rank, P):
    import longattn.distributed as ld
    n = 3 if rank == 0 else 1  # not the layout convention: 4 tokens over 2 ranks is 2 + 2
    q = torch.randn(1, 1, n, 4)
    ld.softmax_attention(q, q, q)


def test_a_wrong_layout_is_a_clear_error_on_every_rank():
    errors, hung = dist_harness.run(2, _mismatch_body, timeout=60)
    assert not hung
    assert [r for r, _ in errors] == [0, 1]
    assert all("local lengths [2, 2]" in tb for _, tb in errors), errors
