"""Garbage in padding and in the future never reaches an output or a gradient (issue 12, parts 2,
3 and 5): NaN and ±inf in masked keys' q, k and v for softmax_attention, shatter_attention,
yoso_expectation and yoso_attention, forward and backward; toeplitz_matmul(causal=True) with
non-finite future rows on both paths, and causal softmax_attention and shatter_attention with a
non-finite future key or value; dropout's largest p; yoso_expectation near q ∥ ±k."""
import math

import pytest
import torch
import torch.nn.functional as F

import longattn

BAD = [math.nan, math.inf, -math.inf]


def _mask(B, N):
    m = torch.ones(B, N, dtype=torch.bool)
    m[0, -3:] = False   # trailing padding
    m[1, 1] = False     # a hole in the middle
    return m


def _dirty(x, mask, value, seq_dim):
    """x with every masked position's row set to `value`."""
    shape = [1] * x.dim()
    shape[0], shape[seq_dim] = mask.shape
    return x.masked_fill(~mask.view(shape), value)


def _run(fn, inputs, g):
    leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
    out = fn(*leaves)
    out.backward(g)
    return out.detach(), [t.grad for t in leaves]


def _check_same(fn, clean, dirty, g, rows=None):
    """Outputs and gradients of the dirty call equal the clean call's (on `rows` of the output only
    when given: a masked query's own row may depend on its own garbage)."""
    out_c, grads_c = _run(fn, clean, g)
    out_d, grads_d = _run(fn, dirty, g)
    sel = (lambda t: t) if rows is None else rows
    torch.testing.assert_close(sel(out_d), sel(out_c), rtol=1e-12, atol=1e-12)
    for gc, gd in zip(grads_c, grads_d):
        assert torch.isfinite(gd).all()
        torch.testing.assert_close(gd, gc, rtol=1e-12, atol=1e-12)


B, H, N, D, Dv = 2, 2, 9, 4, 3


def _qkv(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, H, N, d, generator=g, dtype=torch.float64) for d in (D, D, Dv)]


@pytest.mark.parametrize("value", BAD)
@pytest.mark.parametrize("which", ["k", "v", "kv"])
@pytest.mark.parametrize("causal", [False, True])
def test_softmax_masked_keys_take_no_part(value, which, causal):
    q, k, v = _qkv()
    mask = _mask(B, N)
    # Clean: masked rows zero (the operator must give the same whatever those rows hold).
    k0, v0 = _dirty(k, mask, 0.0, 2), _dirty(v, mask, 0.0, 2)
    kd = _dirty(k, mask, value, 2) if "k" in which else k0
    vd = _dirty(v, mask, value, 2) if "v" in which else v0
    fn = lambda q, k, v: longattn.softmax_attention(q, k, v, causal=causal, key_padding_mask=mask)  # noqa: E731
    g = torch.randn(B, H, N, Dv, dtype=torch.float64)
    _check_same(fn, [q, k0, v0], [q, kd, vd], g)


@pytest.mark.parametrize("value", BAD)
def test_softmax_masked_query_garbage_stays_in_its_own_row(value):
    q, k, v = _qkv(1)
    mask = _mask(B, N)
    fn = lambda q: longattn.softmax_attention(q, k, v, key_padding_mask=mask)  # noqa: E731
    clean, dirty = fn(_dirty(q, mask, 0.0, 2)), fn(_dirty(q, mask, value, 2))
    keep = mask[:, None, :, None].expand_as(clean)
    torch.testing.assert_close(dirty[keep], clean[keep], rtol=0, atol=0)


@pytest.mark.parametrize("value", BAD)
@pytest.mark.parametrize("which", ["q", "k", "v", "qkv"])
@pytest.mark.parametrize("backward", ["exact", "surrogate"])
def test_yoso_expectation_masked_tokens_take_no_part(value, which, backward):
    q, k, v = _qkv(2)
    mask = _mask(B, N)
    clean = [_dirty(t, mask, 0.5, 2) for t in (q, k, v)]
    dirty = [_dirty(t, mask, value, 2) if name in which else c for name, t, c in zip("qkv", (q, k, v), clean)]
    fn = lambda q, k, v: longattn.yoso_expectation(q, k, v, hash_bits=4, key_padding_mask=mask,  # noqa: E731
                                                   backward=backward)
    _check_same(fn, clean, dirty, torch.randn(B, H, N, Dv, dtype=torch.float64))


@pytest.mark.parametrize("value", BAD)
@pytest.mark.parametrize("which", ["q", "k", "v", "qkv"])
@pytest.mark.parametrize("backward", ["lsh", "exact"])
def test_yoso_attention_masked_tokens_take_no_part(value, which, backward):
    q, k, v = _qkv(3)
    mask = _mask(B, N)
    clean = [_dirty(t, mask, 0.5, 2) for t in (q, k, v)]
    dirty = [_dirty(t, mask, value, 2) if name in which else c for name, t, c in zip("qkv", (q, k, v), clean)]
    fn = lambda q, k, v: longattn.yoso_attention(q, k, v, hash_bits=4, num_hashes=8, seed=5,  # noqa: E731
                                                 key_padding_mask=mask, backward=backward)
    _check_same(fn, clean, dirty, torch.randn(B, H, N, Dv, dtype=torch.float64))


@pytest.mark.parametrize("value", BAD)
@pytest.mark.parametrize("which", ["k", "v", "kv"])
@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
@pytest.mark.parametrize("causal", [False, True])
def test_shatter_masked_keys_take_no_part(value, which, activation, causal):
    g = torch.Generator().manual_seed(4)
    P = 3
    q = torch.randn(B, N, D, generator=g, dtype=torch.float64)
    k = torch.randn(B, N, D, generator=g, dtype=torch.float64)
    v = torch.randn(B, P, N, Dv, generator=g, dtype=torch.float64)
    part = torch.softmax(torch.randn(P, 2 * N - 1, generator=g, dtype=torch.float64), 0)
    mask = _mask(B, N)
    k0, v0 = _dirty(k, mask, 0.0, 1), _dirty(v, mask, 0.0, 2)
    kd = _dirty(k, mask, value, 1) if "k" in which else k0
    vd = _dirty(v, mask, value, 2) if "v" in which else v0
    fn = lambda q, k, v, p: longattn.shatter_attention(q, k, v, p, activation=activation,  # noqa: E731
                                                       causal=causal, key_padding_mask=mask)
    _check_same(fn, [q, k0, v0, part], [q, kd, vd, part], torch.randn(B, N, Dv, dtype=torch.float64))


# ------------------------------------------------------- causal attention: future values


def _future_case(fn, inputs, seq_dims, which, pos, value, out_shape):
    """An inf/NaN at position `pos` of the inputs named in `which` (keys or values): the outputs of
    earlier rows equal the clean call's, and so does the gradient of every earlier query when only
    earlier outputs carry a gradient (rows from pos on may be NaN: they see the bad value)."""
    names = ["q", "k", "v", "part"]
    dirty = []
    for name, t, d in zip(names, inputs, seq_dims):
        if name in which:
            t = t.clone()
            t.select(d, pos)[..., 1] = value
        dirty.append(t)
    g = torch.randn(out_shape, dtype=torch.float64)
    g.narrow(-2, pos, out_shape[-2] - pos).zero_()
    (out_c, grads_c), (out_d, grads_d) = _run(fn, inputs, g), _run(fn, dirty, g)
    earlier = lambda t: t.narrow(-2, 0, pos)  # noqa: E731
    assert torch.isfinite(earlier(out_d)).all()
    torch.testing.assert_close(earlier(out_d), earlier(out_c), rtol=1e-12, atol=1e-12)
    gq_d, gq_c = earlier(grads_d[0]), earlier(grads_c[0])
    assert torch.isfinite(gq_d).all()
    torch.testing.assert_close(gq_d, gq_c, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("value", BAD)
@pytest.mark.parametrize("which", ["k", "v"])
@pytest.mark.parametrize("n,pos", [(9, 1), (9, 5), (9, 8), (150, 70), (150, 130)])
@pytest.mark.parametrize("bias", [False, True])
def test_softmax_causal_future_values_never_reach_earlier_rows(value, which, n, pos, bias):
    g = torch.Generator().manual_seed(n + pos)
    q, k, v = (torch.randn(1, 2, n, d, generator=g, dtype=torch.float64) for d in (D, D, Dv))
    rb = torch.randn(2, 2 * n - 1, generator=g, dtype=torch.float64) if bias else None
    fn = lambda q, k, v: longattn.softmax_attention(q, k, v, causal=True, rel_bias=rb)  # noqa: E731
    _future_case(fn, [q, k, v], [2, 2, 2], which, pos, value, (1, 2, n, Dv))


@pytest.mark.parametrize("value", BAD)
@pytest.mark.parametrize("which", ["k", "v"])
@pytest.mark.parametrize("n,pos", [(9, 1), (9, 8), (150, 70), (150, 140)])
@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
def test_shatter_causal_future_values_never_reach_earlier_rows(value, which, n, pos, activation):
    g = torch.Generator().manual_seed(n + pos)
    P = 3
    q, k = (torch.randn(2, n, D, generator=g, dtype=torch.float64) for _ in range(2))
    v = torch.randn(2, P, n, Dv, generator=g, dtype=torch.float64)
    part = torch.softmax(torch.randn(P, 2 * n - 1, generator=g, dtype=torch.float64), 0)
    fn = lambda q, k, v, p: longattn.shatter_attention(q, k, v, p, activation=activation,  # noqa: E731
                                                       causal=True)
    _future_case(fn, [q, k, v, part], [1, 1, 2, 1], which, pos, value, (2, n, Dv))


@pytest.mark.parametrize("value", BAD)
@pytest.mark.parametrize("which", ["k", "v"])
@pytest.mark.parametrize("n,pos", [(9, 1), (9, 8), (150, 100), (150, 140)])
@pytest.mark.parametrize("feature_map", ["elu", "relu", "sikf", "favor"])
@pytest.mark.parametrize("path", ["fused", "reference"])
def test_kernelized_causal_future_values_never_reach_earlier_rows(value, which, n, pos, feature_map, path):
    # The causal scan takes a chunk's keys as one block: (n, pos) = (150, 100) puts the bad value
    # inside a chunk after earlier rows of the same chunk.
    g = torch.Generator().manual_seed(n + pos)
    q, k, v = (torch.randn(1, 2, n, d, generator=g, dtype=torch.float64) for d in (D, D, Dv))
    omega = longattn.random_features(8, D, seed=1, dtype=torch.float64) if feature_map == "favor" else None
    fn = lambda q, k, v: longattn.kernelized_attention(q, k, v, feature_map=feature_map, causal=True,  # noqa: E731
                                                      projection=omega, path=path)
    _future_case(fn, [q, k, v], [2, 2, 2], which, pos, value, (1, 2, n, Dv))


@pytest.mark.parametrize("value", BAD)
@pytest.mark.parametrize("which", ["k", "v"])
@pytest.mark.parametrize("n,pos", [(9, 5), (150, 100)])
@pytest.mark.parametrize("path", ["fused", "reference"])
def test_kernelized_rel_bias_causal_future_values_never_reach_earlier_rows(value, which, n, pos, path):
    g = torch.Generator().manual_seed(n + pos)
    q, k, v = (torch.randn(1, 2, n, d, generator=g, dtype=torch.float64) for d in (D, D, Dv))
    rb = torch.randn(2, 2 * n - 1, generator=g, dtype=torch.float64)
    fn = lambda q, k, v: longattn.kernelized_attention(q, k, v, feature_map="elu", causal=True,  # noqa: E731
                                                      rel_bias=rb, path=path)
    _future_case(fn, [q, k, v], [2, 2, 2], which, pos, value, (1, 2, n, Dv))


# ------------------------------------------------------------------------- causal Toeplitz


@pytest.mark.parametrize("path", ["fft", "direct"])
@pytest.mark.parametrize("n", [1, 5, 64, 301])
@pytest.mark.parametrize("where", ["first", "middle", "last"])
@pytest.mark.parametrize("value", BAD)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_causal_toeplitz_future_values_never_reach_earlier_rows(path, n, where, value, dtype):
    g = torch.Generator().manual_seed(n)
    Hh, C = 2, 7
    c = torch.randn(Hh, 2 * n - 1, generator=g, dtype=torch.float64)
    x = torch.randn(2, Hh, n, C, generator=g, dtype=torch.float64)
    pos = {"first": 0, "middle": n // 2, "last": n - 1}[where]
    bad = x.clone()
    bad[1, 0, pos, 3] = value  # one entry of one slice; the other slices stay finite
    y = longattn.toeplitz_matmul(c.to(dtype), bad.to(dtype), causal=True, path=path)
    i = torch.arange(n)
    T = c[:, (i[None, :] - i[:, None]) + n - 1] * torch.ones(n, n, dtype=torch.float64).tril()
    ref = T.unsqueeze(0) @ x  # rows before pos do not depend on row pos
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    scale = ref.abs().max()
    earlier = y[1, 0, :pos].double()
    assert torch.isfinite(earlier).all()
    torch.testing.assert_close(earlier, ref[1, 0, :pos], rtol=0, atol=tol * scale)
    # The other slices are exact everywhere, and the bad slice's other channels too.
    others = torch.ones(2, Hh, dtype=torch.bool)
    others[1, 0] = False
    torch.testing.assert_close(y[others].double(), ref[others], rtol=0, atol=tol * scale)
    torch.testing.assert_close(y[1, 0, :, [0, 1, 2, 4, 5, 6]].double(), ref[1, 0, :, [0, 1, 2, 4, 5, 6]],
                               rtol=0, atol=tol * scale)


# ------------------------------------------------------------------------------- dropout


def test_dropout_p_that_would_round_to_one_is_rejected():
    x = torch.ones(1000)
    for p in (1 - 1e-7, 1 - 2.0**-17, 1.0, 1.5, math.nan, -0.1):
        with pytest.raises(RuntimeError, match=r"p must be in \[0, 1 - 2\^-16\]"):
            longattn.dropout(x, p, 0)
    with pytest.raises(ValueError, match=r"1 - 2\^-16"):
        longattn.nn.Dropout(1 - 1e-7)


def test_dropout_largest_p_keeps_some_and_scales_exactly():
    p = 1 - 2.0**-16
    x = torch.ones(1 << 22, dtype=torch.float64)
    y = longattn.dropout(x, p, 7)
    kept = y[y != 0]
    # Binomial(2^22, 2^-16): mean 64, sd 8; 64 ± 6 sd.
    assert 16 <= kept.numel() <= 112
    assert torch.equal(kept, torch.full_like(kept, 65536.0))


def test_dropout_seeds_take_64_bits():
    x = torch.randn(4096)
    a = longattn.dropout(x, 0.5, 2**64 - 1)
    b = longattn.dropout(x, 0.5, -1)  # the same 64 bits
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match=r"seed must be an integer in \[-2\*\*63, 2\*\*64\)"):
        longattn.dropout(x, 0.5, 2**64)
    with pytest.raises(TypeError, match="seed must be an integer"):
        longattn.dropout(x, 0.5, 1.5)


# ------------------------------------------------------------------ YOSO-E near q ∥ ±k


@pytest.mark.parametrize("sign", [1.0, -1.0])
@pytest.mark.parametrize("tau", [4, 8, 16])
def test_yoso_expectation_float32_when_q_parallel_to_k(sign, tau):
    g = torch.Generator().manual_seed(tau)
    q = torch.randn(1, 2, 40, 16, generator=g)
    k = sign * q * torch.rand(1, 2, 40, 1, generator=g).add(0.5)  # same direction, other norms
    k[:, :, ::3] = torch.randn(1, 2, 14, 16, generator=g)         # and some unrelated keys
    v = torch.randn(1, 2, 40, 3, generator=g)
    y = longattn.yoso_expectation(q, k, v, hash_bits=tau)
    x = F.normalize(q.double(), dim=-1) @ F.normalize(k.double(), dim=-1).transpose(-1, -2)
    e = (1 - torch.arccos(x.clamp(-1, 1)) / math.pi) ** tau
    ref = e @ v.double()
    # float32 rounding of q, k, v and the sums: a few ulps of the output's scale.
    torch.testing.assert_close(y.double(), ref, rtol=0, atol=2e-5 * ref.abs().max())
