"""Property-based tests of every operator (issue 12, part 6): over shapes (0 and 1 sizes
included), dtypes, strided layouts, masks, options and values (NaN and ±inf where they must take no
part, large magnitudes where the result stays representable), each call either raises a clear
exception (RuntimeError, ValueError or TypeError with a message) or returns the fp64 reference.

Deterministic in `make test`: the "ci" profile derandomizes (examples follow from the test's
source) with a bounded number of examples. `make fuzz` runs the "fuzz" profile
(HYPOTHESIS_PROFILE=fuzz): random, many more examples, printing statistics.
"""
import math

import pytest
import torch
from hypothesis import given, note
from hypothesis import strategies as st

import longattn
from test_shatter import reference as shatter_reference
from test_softmax_attention import reference as softmax_reference
from test_toeplitz import bias_2d_dense, toeplitz_ref
from test_yoso import collision_frequencies, expectation_weights

# The profiles ("ci", the default, and "fuzz") are registered in conftest.py.

DTYPES = st.sampled_from([torch.float32, torch.float64])
SIZES = st.sampled_from([0, 1, 2, 3])
SEQ = st.sampled_from([0, 1, 2, 3, 5, 8, 17, 33, 70])
DIMS = st.sampled_from([0, 1, 2, 3, 8])
GARBAGE = st.sampled_from([math.nan, math.inf, -math.inf, 1e30])
CLEAR = (RuntimeError, ValueError, TypeError)


def mag(t):
    """max |t|, 0 for an empty tensor."""
    return float(t.abs().max()) if t.numel() else 0.0


def tol(dtype, scale=1.0):
    """Absolute tolerance against the fp64 reference, relative to the result's scale."""
    return (2e-4 if dtype == torch.float32 else 1e-9) * max(1.0, float(scale))


@st.composite
def tensors(draw, shape, dtype, magnitude=3.0):
    """A tensor of `shape` whose values are drawn at one of a few scales, in a contiguous or a
    strided layout (a transposed copy, or a slice of a wider buffer: last dim not contiguous)."""
    seed = draw(st.integers(0, 2**31 - 1))
    scale = draw(st.sampled_from([1.0, magnitude, 1e-3]))
    g = torch.Generator().manual_seed(seed)
    layout = draw(st.sampled_from(["contiguous", "transposed", "strided"]))
    shape = list(shape)
    if layout == "strided" and len(shape) >= 1:
        wide = shape[:-1] + [2 * shape[-1]]
        return (torch.randn(wide, generator=g, dtype=torch.float64) * scale).to(dtype)[..., ::2]
    if layout == "transposed" and len(shape) >= 3:
        t = torch.randn(shape[:-3] + [shape[-2], shape[-3], shape[-1]], generator=g, dtype=torch.float64)
        return (t * scale).to(dtype).transpose(-3, -2)
    return (torch.randn(shape, generator=g, dtype=torch.float64) * scale).to(dtype)


@st.composite
def masks(draw, B, N):
    kind = draw(st.sampled_from(["none", "random", "all_false_row", "all_true"]))
    if kind == "none":
        return None
    seed = draw(st.integers(0, 2**31 - 1))
    m = torch.rand(B, N, generator=torch.Generator().manual_seed(seed)) < 0.7
    if kind == "all_true":
        m[:] = True
    if kind == "all_false_row" and B > 0:
        m[0] = False
    return m


def fill_masked(x, mask, value, seq_dim):
    if mask is None:
        return x
    shape = [1] * x.dim()
    shape[0], shape[seq_dim] = mask.shape
    return x.masked_fill(~mask.view(shape), value)


def clear_error(e):
    msg = str(e).strip()
    assert msg, f"{type(e).__name__} without a message"
    first = msg.splitlines()[0]
    assert len(first) < 600 and ("got" in first or "must" in first or "expected" in first or "need" in first), first
    return first


def shape_perturbation(draw, shape):
    """Usually the right shape; sometimes one size changed (the call must then be refused)."""
    if not draw(st.booleans()) or not draw(st.booleans()):
        return list(shape), False
    d = draw(st.integers(0, len(shape) - 1))
    new = list(shape)
    new[d] = draw(st.sampled_from([s for s in (0, 1, 2, 5) if s != shape[d]]))
    return new, True


# ---------------------------------------------------------------------------------- softmax


@given(data=st.data())
def test_softmax_attention_property(data):
    d = data.draw
    dtype, B, H, Nq, D, Dv = d(DTYPES), d(SIZES), d(SIZES), d(SEQ), d(DIMS), d(DIMS)
    causal, use_bias, scale = d(st.booleans()), d(st.booleans()), d(st.sampled_from([None, 0.5, 0.0]))
    Nk = Nq if (causal or use_bias or d(st.booleans())) else d(SEQ)
    kshape, bad_k = shape_perturbation(d, [B, H, Nk, D])
    q = d(tensors([B, H, Nq, D], dtype))
    k = d(tensors(kshape, dtype))
    v = d(tensors([B, H, Nk, Dv], dtype))
    mask = d(masks(B, Nk))
    bias = d(tensors([H, max(2 * Nq - 1, 0)], dtype)) if use_bias else None
    garbage = d(GARBAGE)
    if not bad_k:
        k, v = fill_masked(k, mask, garbage, 2), fill_masked(v, mask, garbage, 2)
    note(f"{dtype} q {list(q.shape)} k {list(k.shape)} v {list(v.shape)} causal={causal} bias={use_bias}")
    try:
        out = longattn.softmax_attention(q, k, v, causal=causal, key_padding_mask=mask, rel_bias=bias, scale=scale)
    except CLEAR as e:
        clear_error(e)
        assert bad_k, f"refused a valid call: {e}"
        return
    assert not bad_k, "accepted k of the wrong shape"
    k0, v0 = fill_masked(k, mask, 0.0, 2), fill_masked(v, mask, 0.0, 2)
    ref_scale = 1.0 if scale is None and D == 0 else scale  # no features: every logit is 0 anyway
    ref = softmax_reference(q, k0, v0, causal=causal, mask=mask, bias=bias, scale=ref_scale)
    assert out.dtype == dtype and out.shape == ref.shape
    torch.testing.assert_close(out.double(), ref, rtol=0, atol=tol(dtype, mag(ref)))


# ------------------------------------------------------------------------------- kernelized


@given(data=st.data())
def test_kernelized_attention_property(data):
    """elu, relu and sikf with eps = 0 (the shift then cancels, so the formula is unambiguous);
    masked keys hold finite values (their NaN case belongs to issue 12 part 2's other half)."""
    d = data.draw
    dtype, B, H, N, D, Dv = d(DTYPES), d(SIZES), d(SIZES), d(SEQ), d(DIMS), d(DIMS)
    fm, causal = d(st.sampled_from(["elu", "relu", "sikf"])), d(st.booleans())
    q, k, v = d(tensors([B, H, N, D], dtype, 2.0)), d(tensors([B, H, N, D], dtype, 2.0)), d(tensors([B, H, N, Dv], dtype))
    mask = d(masks(B, N))
    try:
        out = longattn.kernelized_attention(q, k, v, feature_map=fm, causal=causal, key_padding_mask=mask, eps=0.0)
    except CLEAR as e:
        clear_error(e)
        assert D == 0, f"refused a valid call: {e}"
        return
    assert out.shape == (B, H, N, Dv) and out.dtype == dtype
    assert torch.isfinite(out).all()
    if out.numel() == 0:
        return
    qd, kd, vd = q.double(), k.double(), v.double()
    if fm == "elu":
        fq, fk = torch.nn.functional.elu(qd) + 1, torch.nn.functional.elu(kd) + 1
    elif fm == "relu":
        fq, fk = qd.clamp_min(0), kd.clamp_min(0)
    else:
        fq, fk = torch.exp(qd), torch.exp(kd)
    w = fq @ fk.transpose(-1, -2)
    allowed = torch.ones(B, 1, N, N, dtype=torch.bool)
    if mask is not None:
        allowed &= mask[:, None, None, :]
    if causal:
        allowed &= torch.ones(N, N, dtype=torch.bool).tril()
    w = w.masked_fill(~allowed, 0.0)
    den = w.sum(-1, keepdim=True)
    # Rows whose weights nearly vanish (relu) are ill-conditioned in float32; compare the others.
    size = fq.norm(dim=-1, keepdim=True) * fk.norm(dim=-1).amax(-1)[..., None, None]
    ok = den > 1e-3 * size
    ref = torch.where(den > 0, (w @ vd) / den.clamp_min(1e-300), torch.zeros((), dtype=torch.float64))
    sel = ok.expand_as(ref)
    if sel.any():
        torch.testing.assert_close(out.double()[sel], ref[sel], rtol=0, atol=tol(dtype, mag(vd)) * 10)


# ------------------------------------------------------------------------------------ YOSO


@given(data=st.data())
def test_yoso_expectation_property(data):
    d = data.draw
    dtype, B, H, N, D, Dv = d(DTYPES), d(SIZES), d(SIZES), d(SEQ), d(DIMS), d(DIMS)
    tau = d(st.sampled_from([0, 1, 4, 9, 33]))
    q, k, v = d(tensors([B, H, N, D], dtype)), d(tensors([B, H, N, D], dtype)), d(tensors([B, H, N, Dv], dtype))
    if d(st.booleans()) and N > 0:  # some keys parallel or antiparallel to the queries
        k = torch.where(torch.rand(B, H, N, 1) < 0.5, q, -q) * 1.7
    mask = d(masks(B, N))
    garbage = d(GARBAGE)
    qg, kg, vg = (fill_masked(t, mask, garbage, 2) for t in (q, k, v))
    try:
        out = longattn.yoso_expectation(qg, kg, vg, hash_bits=tau, key_padding_mask=mask)
    except CLEAR as e:
        clear_error(e)
        assert tau < 1 or tau > 30 or (D == 0 and B * H * N > 0), f"refused a valid call: {e}"
        return
    assert 1 <= tau <= 30 and (D > 0 or B * H * N == 0)
    ref = expectation_weights(fill_masked(q, mask, 0, 2).to(dtype), fill_masked(k, mask, 0, 2).to(dtype), tau, mask) \
        @ fill_masked(v, mask, 0, 2).double()
    torch.testing.assert_close(out.double(), ref, rtol=0, atol=tol(dtype, N * max(1.0, mag(ref))))


@given(data=st.data())
def test_yoso_attention_property(data):
    d = data.draw
    dtype, B, H, N, D, Dv = d(DTYPES), d(SIZES), d(SIZES), d(SEQ), d(st.sampled_from([1, 3, 8])), d(DIMS)
    tau, m = d(st.sampled_from([1, 4, 9])), d(st.sampled_from([1, 3, 8]))
    seed, hashing = d(st.integers(-(2**63), 2**64 - 1)), d(st.sampled_from(["gaussian", "hadamard"]))
    q, k, v = d(tensors([B, H, N, D], dtype)), d(tensors([B, H, N, D], dtype)), d(tensors([B, H, N, Dv], dtype))
    mask = d(masks(B, N))
    garbage = d(GARBAGE)
    qg, kg, vg = (fill_masked(t, mask, garbage, 2) for t in (q, k, v))
    out = longattn.yoso_attention(qg, kg, vg, hash_bits=tau, num_hashes=m, seed=seed, key_padding_mask=mask,
                                  hashing=hashing)
    # Reference: the collision frequencies of the operator's own hashes (of the cleaned inputs).
    q0, k0 = fill_masked(q, mask, 0, 2), fill_masked(k, mask, 0, 2)
    s = seed - 2**64 if seed >= 2**63 else seed
    if B * H * N == 0:
        assert out.shape == (B, H, N, Dv)
        return
    w = collision_frequencies(q0.contiguous(), k0.contiguous(), tau, m, s, mask, hashing)  # internal op: contiguous
    if mask is not None:
        w = w * mask[:, None, None, :] * mask[:, None, :, None]
    ref = w @ fill_masked(v, mask, 0, 2).double()
    torch.testing.assert_close(out.double(), ref, rtol=0, atol=tol(dtype, N * max(1.0, mag(ref))))


# --------------------------------------------------------------------------------- Shatter


@given(data=st.data())
def test_shatter_attention_property(data):
    d = data.draw
    dtype, B, N, D, Dv, P = d(DTYPES), d(SIZES), d(SEQ), d(DIMS), d(DIMS), d(st.sampled_from([0, 1, 2, 4]))
    activation, causal = d(st.sampled_from(["softmax", "sigmoid"])), d(st.booleans())
    q, k = d(tensors([B, N, D], dtype)), d(tensors([B, N, D], dtype))
    v = d(tensors([B, P, N, Dv], dtype))
    pshape, bad = shape_perturbation(d, [P, max(2 * N - 1, 0)])
    part = torch.softmax(d(tensors(pshape, torch.float64)), 0).to(dtype)
    mask = d(masks(B, N))
    garbage = d(GARBAGE)
    kg, vg = fill_masked(k, mask, garbage, 1), fill_masked(v, mask, garbage, 2)
    try:
        out = longattn.shatter_attention(q, kg, vg, part, activation=activation, causal=causal,
                                         key_padding_mask=mask)
    except CLEAR as e:
        clear_error(e)
        assert bad, f"refused a valid call: {e}"
        return
    assert not bad, "accepted a partition of the wrong shape"
    ref = shatter_reference(q.double(), fill_masked(k, mask, 0, 1).double(), fill_masked(v, mask, 0, 2).double(),
                            part.double(), activation, causal, mask)
    torch.testing.assert_close(out.double(), ref, rtol=0, atol=tol(dtype, N * max(1.0, mag(ref))))


# -------------------------------------------------------------------------------- Toeplitz


@given(data=st.data())
def test_toeplitz_matmul_property(data):
    d = data.draw
    dtype, B, H, N, C = d(DTYPES), d(SIZES), d(SIZES), d(SEQ), d(DIMS)
    causal, path = d(st.booleans()), d(st.sampled_from(["auto", "fft", "direct"]))
    magnitude = 1e30 if dtype == torch.float64 else 1e15
    cshape, bad = shape_perturbation(d, [H, max(2 * N - 1, 0)])
    c = d(tensors(cshape, dtype))
    x = d(tensors([B, H, N, C], dtype, magnitude))
    bad_row = d(st.one_of(st.none(), st.integers(0, max(N - 1, 0)))) if causal and N > 0 and B * H * C > 0 else None
    xg = x.clone()
    if bad_row is not None:
        xg[0, 0, bad_row, 0] = d(GARBAGE)
    try:
        y = longattn.toeplitz_matmul(c, xg, causal=causal, path=path)
    except CLEAR as e:
        clear_error(e)
        assert bad, f"refused a valid call: {e}"
        return
    assert not bad
    ref = toeplitz_ref(c, x, causal)
    scale = mag(c) * mag(x) * N
    check = torch.ones_like(ref, dtype=torch.bool)
    if bad_row is not None:
        check[0, 0, bad_row:, 0] = False  # at and after the bad row, channel 0 of that slice may differ
    assert torch.isfinite(y[check]).all()
    torch.testing.assert_close(y.double()[check], ref[check], rtol=0, atol=tol(dtype) * scale)


@given(data=st.data())
def test_toeplitz_matmul_2d_property(data):
    d = data.draw
    dtype, B, H, C = d(DTYPES), d(SIZES), d(SIZES), d(DIMS)
    hh, ww, path = d(st.sampled_from([1, 2, 5, 9])), d(st.sampled_from([1, 3, 8])), d(st.sampled_from(["auto", "fft", "direct"]))
    rshape, bad = shape_perturbation(d, [H, 2 * hh - 1])
    row, col = d(tensors(rshape, dtype)), d(tensors([H, 2 * ww - 1], dtype))
    x = d(tensors([B, H, hh * ww, C], dtype))
    try:
        y = longattn.toeplitz_matmul_2d(row, col, x, height=hh, width=ww, path=path)
    except CLEAR as e:
        clear_error(e)
        assert bad, f"refused a valid call: {e}"
        return
    assert not bad
    ref = bias_2d_dense(row.double(), col.double(), hh, ww).unsqueeze(0) @ x.double()
    torch.testing.assert_close(y.double(), ref, rtol=0, atol=tol(dtype, hh * ww * max(1.0, mag(ref))))


# --------------------------------------------------------------------------------- dropout


@given(data=st.data())
def test_dropout_property(data):
    d = data.draw
    dtype = d(DTYPES)
    shape = d(st.lists(st.sampled_from([0, 1, 3, 64]), min_size=0, max_size=3))
    x = d(tensors(shape, dtype)) if shape else torch.tensor(1.5, dtype=dtype)
    p = d(st.one_of(st.floats(0, 1, allow_nan=False), st.sampled_from([0.0, 1 - 2.0**-16, 1 - 1e-7, 1.0, math.nan, -1e-9])))
    seed = d(st.integers(-(2**63), 2**64 - 1))
    try:
        y = longattn.dropout(x, p, seed)
    except CLEAR as e:
        clear_error(e)
        assert not (0 <= p <= 1 - 2.0**-16), f"refused a valid p: {e}"
        return
    assert 0 <= p <= 1 - 2.0**-16
    t = round(p * 65536)
    scale = 65536 / (65536 - t)
    kept = y != 0
    # Every element is dropped (0) or scaled by exactly 65536 / (65536 - t), computed in fp64.
    assert torch.equal(y[kept], x[kept] * torch.tensor(scale, dtype=dtype))
    if t == 0:
        assert torch.equal(y, x)
