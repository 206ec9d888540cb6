"""The reference path (issue 17) of softmax_attention and shatter_attention: path="reference" on
CPU against the fused kernels (float64 to 1e-10, every gradient; float32, bfloat16, float16
looser), over masks (all-masked batches), causal, rel_bias, N = 1 and N not a power of two,
Nq != Nk, several query chunks; non-finite values in the future and in masked keys; measured
peak memory at N = 16384 against the formulas of ops/reference/softmax_attention.cpp and
ops/reference/shatter.cpp; and the dispatch (CUDA reaches the reference, Meta its Meta kernel).
(No randomness in these operators, so no bits to compare beyond the values.)"""
import itertools
import math
import os
import sys

import pytest
import torch

import longattn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peak_memory import peak_extra_bytes  # noqa: E402

F64 = dict(rtol=1e-10, atol=1e-12)
BUDGET = 1 << 24  # ops::kReferenceChunkElements


def _both_paths(fn, inputs, seed=0):
    """(out, *grads) of fn on the fused and on the reference path, for one random grad_out."""
    results = []
    for path in ("fused", "reference"):
        leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
        out = fn(*leaves, path=path)
        g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype)
        results.append([out.detach(), *torch.autograd.grad(out, leaves, g)])
    return results


def _assert_paths_agree(fn, inputs, **tol):
    fused, reference = _both_paths(fn, inputs)
    for name, a, b in zip(["out"] + [f"grad {i}" for i in range(len(inputs))], fused, reference):
        torch.testing.assert_close(b, a, msg=lambda m: f"{name}: {m}", **tol)


def _softmax_inputs(B, H, Nq, Nk, D, Dv, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, H, n, d, generator=g, dtype=dtype) for n, d in ((Nq, D), (Nk, D), (Nk, Dv))]


def _mask(B, N, all_masked_batch=True, seed=1):
    m = torch.rand(B, N, generator=torch.Generator().manual_seed(seed)) > 0.4
    m[0, 0] = True
    if all_masked_batch and B > 1:
        m[1] = False
    return m


@pytest.mark.parametrize("causal,use_mask,use_bias", list(itertools.product([False, True], repeat=3)))
@pytest.mark.parametrize("N", [1, 13, 70])
def test_softmax_reference_matches_fused_fp64(causal, use_mask, use_bias, N):
    B, H, D, Dv = 2, 3, 5, 4
    q, k, v = _softmax_inputs(B, H, N, N, D, Dv)
    mask = _mask(B, N) if use_mask else None
    bias = torch.randn(H, 2 * N - 1, dtype=torch.float64)
    inputs = [q, k, v] + ([bias] if use_bias else [])

    def fn(q, k, v, *b, path):
        return longattn.softmax_attention(q, k, v, causal=causal, key_padding_mask=mask,
                                          rel_bias=b[0] if b else None, path=path)

    _assert_paths_agree(fn, inputs, **F64)


@pytest.mark.parametrize("use_mask", [False, True])
@pytest.mark.parametrize("Nq,Nk", [(7, 11), (11, 3), (5, 1)])
def test_softmax_reference_cross_attention_fp64(use_mask, Nq, Nk):
    q, k, v = _softmax_inputs(2, 2, Nq, Nk, 6, 3, seed=2)
    mask = _mask(2, Nk, all_masked_batch=False) if use_mask else None
    fn = lambda q, k, v, path: longattn.softmax_attention(q, k, v, key_padding_mask=mask, scale=0.3, path=path)  # noqa: E731
    _assert_paths_agree(fn, [q, k, v], **F64)


@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
@pytest.mark.parametrize("causal,use_mask", list(itertools.product([False, True], repeat=2)))
@pytest.mark.parametrize("N", [1, 13, 70])
def test_shatter_reference_matches_fused_fp64(activation, causal, use_mask, N):
    B, D, P, Dv = 2, 5, 3, 4
    g = torch.Generator().manual_seed(3)
    q, k = (torch.randn(B, N, D, generator=g, dtype=torch.float64) for _ in range(2))
    v = torch.randn(B, P, N, Dv, generator=g, dtype=torch.float64)
    part = torch.randn(P, 2 * N - 1, generator=g, dtype=torch.float64)
    mask = _mask(B, N) if use_mask else None
    fn = lambda q, k, v, part, path: longattn.shatter_attention(  # noqa: E731
        q, k, v, part, activation=activation, causal=causal, key_padding_mask=mask, path=path)
    _assert_paths_agree(fn, [q, k, v, part], **F64)


# Several query chunks: rows per chunk are 2^24 / (B H Nk), so N = 4500 with B H = 1 gives two
# chunks (3728 + 772 rows; the second starts inside the causal triangle and reads the bias at an
# offset). float32 keeps it light; an index off by one would be an O(1) error.
@pytest.mark.parametrize("causal", [False, True])
def test_softmax_reference_several_chunks(causal):
    N = 4500
    assert BUDGET // N < N
    q, k, v = _softmax_inputs(1, 1, N, N, 8, 4, dtype=torch.float32, seed=4)
    bias = torch.randn(1, 2 * N - 1)
    mask = _mask(1, N)
    fn = lambda q, k, v, b, path: longattn.softmax_attention(  # noqa: E731
        q, k, v, causal=causal, key_padding_mask=mask, rel_bias=b, path=path)
    _assert_paths_agree(fn, [q, k, v, bias], rtol=1e-4, atol=2e-5)


@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
def test_shatter_reference_several_chunks(activation):
    N, P = 4200, 1  # chunks of 3994 and 206 rows
    g = torch.Generator().manual_seed(5)
    q, k = (torch.randn(1, N, 8, generator=g) for _ in range(2))
    v = torch.randn(1, P, N, 4, generator=g)
    part = torch.rand(P, 2 * N - 1, generator=g)
    fn = lambda q, k, v, part, path: longattn.shatter_attention(  # noqa: E731
        q, k, v, part, activation=activation, causal=True, path=path)
    _assert_paths_agree(fn, [q, k, v, part], rtol=1e-4, atol=2e-4)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, dict(rtol=1e-5, atol=1e-6)),
                                       (torch.bfloat16, dict(rtol=2e-2, atol=2e-2)),
                                       (torch.float16, dict(rtol=2e-3, atol=2e-3))])
@pytest.mark.parametrize("causal", [False, True])
def test_reference_in_lower_precisions(dtype, tol, causal):
    N = 37
    q, k, v = _softmax_inputs(2, 2, N, N, 8, 8, dtype=dtype, seed=6)
    bias = torch.randn(2, 2 * N - 1, dtype=dtype)
    mask = _mask(2, N)
    fn = lambda q, k, v, b, path: longattn.softmax_attention(  # noqa: E731
        q, k, v, causal=causal, key_padding_mask=mask, rel_bias=b, path=path)
    fused, reference = _both_paths(fn, [q, k, v, bias])
    for a, b in zip(fused, reference):
        assert b.dtype == dtype
        torch.testing.assert_close(b.float(), a.float(), **tol)

    g = torch.Generator().manual_seed(7)
    sq, sk = (torch.randn(2, N, 8, generator=g).to(dtype) for _ in range(2))
    sv = torch.randn(2, 3, N, 4, generator=g).to(dtype)
    part = torch.rand(3, 2 * N - 1, generator=g).to(dtype)
    fn = lambda q, k, v, part, path: longattn.shatter_attention(  # noqa: E731
        q, k, v, part, causal=causal, key_padding_mask=mask, path=path)
    fused, reference = _both_paths(fn, [sq, sk, sv, part])
    for a, b in zip(fused, reference):
        assert b.dtype == dtype
        torch.testing.assert_close(b.float(), a.float(), **tol)


BAD = [math.nan, math.inf, -math.inf]


@pytest.mark.parametrize("value", BAD)
@pytest.mark.parametrize("which", ["q", "k", "v", "grad"])
def test_softmax_future_garbage_reaches_no_earlier_row(value, which):
    """Causal: a non-finite row at position t (query, key, value or output gradient) changes
    nothing for the queries before t, their outputs and their gradients, on the reference path
    (keys and values before t rightly see a garbage query or output gradient at t); t = 200 lies
    inside the second 128-row diagonal tile."""
    B, H, N, t = 1, 2, 300, 200
    q, k, v = _softmax_inputs(B, H, N, N, 4, 3, seed=8)
    bias = torch.randn(H, 2 * N - 1, dtype=torch.float64)
    g = torch.randn(B, H, N, 3, dtype=torch.float64)

    def run(q, k, v, g):
        leaves = [x.clone().requires_grad_(True) for x in (q, k, v, bias)]
        out = longattn.softmax_attention(*leaves[:3], causal=True, rel_bias=leaves[3], path="reference")
        return [out.detach(), *torch.autograd.grad(out, leaves[:3], g)]

    dirty = dict(q=q, k=k, v=v, grad=g)
    dirty[which] = dirty[which].clone()
    dirty[which][:, :, t] = value
    clean, bad = run(q, k, v, g), run(dirty["q"], dirty["k"], dirty["v"], dirty["grad"])
    for c, d in zip(clean[:2], bad[:2]):  # out and grad q
        assert torch.isfinite(d[:, :, :t]).all()
        torch.testing.assert_close(d[:, :, :t], c[:, :, :t], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("value", BAD)
@pytest.mark.parametrize("which", ["q", "k", "v", "grad"])
@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
def test_shatter_future_garbage_reaches_no_earlier_row(value, which, activation):
    B, N, P, t = 2, 300, 2, 200
    gen = torch.Generator().manual_seed(9)
    q, k = (torch.randn(B, N, 4, generator=gen, dtype=torch.float64) for _ in range(2))
    v = torch.randn(B, P, N, 3, generator=gen, dtype=torch.float64)
    part = torch.rand(P, 2 * N - 1, generator=gen, dtype=torch.float64)
    g = torch.randn(B, N, 3, generator=gen, dtype=torch.float64)

    def run(q, k, v, g):
        leaves = [x.clone().requires_grad_(True) for x in (q, k, v)]
        out = longattn.shatter_attention(*leaves, part, activation=activation, causal=True, path="reference")
        return [out.detach(), *torch.autograd.grad(out, leaves, g)]

    dirty = dict(q=q, k=k, v=v, grad=g)
    dirty[which] = dirty[which].clone()
    if which == "v":
        dirty["v"][:, :, t] = value
    else:
        dirty[which][:, t] = value
    clean, bad = run(q, k, v, g), run(dirty["q"], dirty["k"], dirty["v"], dirty["grad"])
    for c, d in zip(clean[:2], bad[:2]):  # out and grad q
        assert torch.isfinite(d[:, :t]).all()
        torch.testing.assert_close(d[:, :t], c[:, :t], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("value", BAD)
def test_masked_key_garbage_takes_no_part(value):
    B, H, N = 2, 2, 9
    q, k, v = _softmax_inputs(B, H, N, N, 4, 3, seed=10)
    mask = _mask(B, N)
    kd, vd = (x.masked_fill(~mask[:, None, :, None], value) for x in (k, v))
    k0, v0 = (x.masked_fill(~mask[:, None, :, None], 0.0) for x in (k, v))
    fn = lambda q, k, v: longattn.softmax_attention(q, k, v, key_padding_mask=mask, path="reference")  # noqa: E731
    torch.testing.assert_close(fn(q, kd, vd), fn(q, k0, v0), rtol=0, atol=0)
    sq, sk = q[:, 0], k[:, 0]
    skd = sk.masked_fill(~mask[:, :, None], value)
    sv = v.masked_fill(~mask[:, None, :, None], value)
    part = torch.rand(H, 2 * N - 1, dtype=torch.float64)
    out = longattn.shatter_attention(sq, skd, sv, part, key_padding_mask=mask, path="reference")
    torch.testing.assert_close(out, longattn.shatter_attention(sq, sk.masked_fill(~mask[:, :, None], 0.0),
                                                               v0, part, key_padding_mask=mask, path="reference"))


def test_path_is_checked():
    q = torch.randn(1, 1, 3, 2)
    with pytest.raises(RuntimeError, match="path must be 'fused' or 'reference', got 'fft'"):
        longattn.softmax_attention(q, q, q, path="fft")
    with pytest.raises(RuntimeError, match="path must be 'fused' or 'reference'"):
        longattn.shatter_attention(q[0], q[0], q, torch.ones(1, 5), path="")


# Peak memory at N = 16384 (one thread, float32, forward + backward), against the stated
# formulas with E = 2^24 elements (the chunk's largest temporary; here E = B H n N exactly) and
# 16 MiB of slack for the O(N D) tensors (inputs' gradients, saved outputs, chunk rows). A dense
# composite would hold N x N = 1 GiB per head and part.
N_PEAK = 16384
E_BYTES = BUDGET * 4
SLACK = 16 << 20


def test_softmax_reference_peak_memory():
    setup = f"""
        N = {N_PEAK}
        q, k, v = (torch.randn(1, 1, N, 16, requires_grad=True) for _ in range(3))
        bias = torch.randn(1, 2 * N - 1, requires_grad=True)
        g = torch.randn(1, 1, N, 16)
    """
    call = """
        out = longattn.softmax_attention(q, k, v, causal=True, rel_bias=bias, path="reference")
        out.backward(g)
    """
    peak = peak_extra_bytes(setup, call)
    # forward <= E + 2 E / B, backward <= max(E + 2 E / B, 2 E, E + 3 E / B): 3 E at B = 1.
    assert peak <= 3 * E_BYTES + SLACK, peak / 2**20
    assert peak < N_PEAK * N_PEAK * 4 / 4


def test_shatter_reference_peak_memory():
    setup = f"""
        N = {N_PEAK}
        q, k = (torch.randn(1, N, 16, requires_grad=True) for _ in range(2))
        v = torch.randn(1, 1, N, 8, requires_grad=True)
        part = torch.rand(1, 2 * N - 1, requires_grad=True)
        g = torch.randn(1, N, 8)
    """
    call = """
        out = longattn.shatter_attention(q, k, v, part, causal=True, path="reference")
        out.backward(g)
    """
    peak = peak_extra_bytes(setup, call)
    # backward <= 3 E + 4 E / B (+ E / B for B > 1), forward <= 2 E + 2 E / B: 7 E at B = 1.
    assert peak <= 7 * E_BYTES + SLACK, peak / 2**20
    assert peak < N_PEAK * N_PEAK * 4 / 2


def _registered_at(line):
    return line.split("registered at ", 1)[1].split(" ", 1)[0]


@pytest.mark.parametrize("op", ["softmax_attention", "shatter_attention"])
@pytest.mark.parametrize("stage", ["forward", "backward"])
def test_non_cpu_devices_reach_the_reference(op, stage):
    """The computed dispatch table sends CUDA (and XPU, MPS) to the CompositeExplicitAutograd
    registration, while CPU and Meta keep their own kernels."""
    name = f"longattn::_{op}_{stage}"
    registered = {e.split(":", 1)[0]: e for e in torch._C._dispatch_dump(name).splitlines() if "registered at" in e}
    table = {e.split(":", 1)[0]: e for e in torch._C._dispatch_dump_table(name).splitlines()}
    composite = _registered_at(registered["CompositeExplicitAutograd[alias]"])
    for device in ("CUDA", "XPU", "MPS"):
        assert _registered_at(table[device]) == composite, table[device]
    for device in ("CPU", "Meta"):
        assert _registered_at(table[device]) == _registered_at(registered[device]) != composite


def test_meta_tensors_reach_the_meta_kernels():
    q = torch.empty(2, 3, 1000, 16, device="meta")
    out, lse = torch.ops.longattn._softmax_attention_forward(q, q, q[..., :8], None, None, True, 0.25)
    assert out.shape == (2, 3, 1000, 8) and lse.shape == (2, 3, 1000) and out.device.type == "meta"
    sq = torch.empty(2, 1000, 16, device="meta")
    out, lse = torch.ops.longattn._shatter_attention_forward(
        sq, sq, torch.empty(2, 3, 1000, 4, device="meta"), torch.empty(3, 1999, device="meta"), None, 0, True, 0.25)
    assert out.shape == (2, 1000, 4) and lse.shape == (2, 1000) and out.device.type == "meta"
    # The public operators too, even when asked for the reference path.
    out = longattn.softmax_attention(q, q, q, causal=True, path="reference")
    assert out.shape == (2, 3, 1000, 16) and out.device.type == "meta"


def test_the_cuda_kernel_is_the_reference():
    """What the dispatcher runs for CUDA tensors, called on CPU tensors (redispatched to the CUDA
    key): the fused kernel's results, forward and backward."""
    cuda = torch._C.DispatchKeySet(torch._C.DispatchKey.CUDA)
    ops = torch.ops.longattn
    q, k, v = _softmax_inputs(2, 2, 20, 20, 4, 3, seed=11)
    mask, bias = _mask(2, 20), torch.randn(2, 39, dtype=torch.float64)
    args = (q, k, v, mask, bias, True, 0.5)
    fused = ops._softmax_attention_forward.default(*args)
    ref = ops._softmax_attention_forward.default.redispatch(cuda, *args)
    for a, b in zip(fused, ref):
        torch.testing.assert_close(b, a, **F64)
    g = torch.randn_like(fused[0])
    bargs = (g, q, k, v, *fused, mask, bias, True, 0.5)
    for a, b in zip(ops._softmax_attention_backward.default(*bargs),
                    ops._softmax_attention_backward.default.redispatch(cuda, *bargs)):
        torch.testing.assert_close(b, a, **F64)
    sq, sk = q[:, 0], k[:, 0]
    part = torch.rand(2, 39, dtype=torch.float64)
    args = (sq, sk, v, part, mask, 0, True, 0.5)
    fused = ops._shatter_attention_forward.default(*args)
    ref = ops._shatter_attention_forward.default.redispatch(cuda, *args)
    for a, b in zip(fused, ref):
        torch.testing.assert_close(b, a, **F64)
    bargs = (torch.randn_like(fused[0]), sq, sk, v, part, *fused, mask, 0, True, 0.5)
    for a, b in zip(ops._shatter_attention_backward.default(*bargs),
                    ops._shatter_attention_backward.default.redispatch(cuda, *bargs)):
        torch.testing.assert_close(b, a, **F64)
