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


# ------------------------------------------------------------------ issue 12: any finite bias
# The reference below is the formula itself, in fp64 (inputs of at most |b| <= 100 keep every
# e^{b} and every sum finite in fp64), with the stabilised features that define eps:
#   out_i = sum_j e^{b[j-i]} phq_i.phk_ij v_j / (sum_j e^{b[j-i]} phq_i.phk_ij + eps)
# phq_i = phi(q_i) e^{-c_i} (the row's largest exponent), phk_ij = phi(k_j) e^{-R_i} (R_i the
# largest key exponent over the keys that take part for row i); elu / relu: no shifts.

def exponents(x, feature_map, omega):
    if feature_map == "sikf":
        return x
    return x @ omega.to(x.dtype).T - 0.5 * (x * x).sum(-1, keepdim=True)


def formula(q, k, v, b, feature_map, omega=None, causal=False, mask=None, eps=0.0):
    q, k, v, b = q.double(), k.double(), v.double(), b.double()
    N = q.shape[2]
    i = torch.arange(N)
    on = torch.ones(q.shape[0], 1, N, N, dtype=torch.bool)
    if causal:
        on = on & (i[None, :] <= i[:, None])
    if mask is not None:
        on = on & mask[:, None, None, :]
    if feature_map in ("elu", "relu"):
        S = features(q, feature_map) @ features(k, feature_map).transpose(-1, -2)
    else:
        uq, uk = exponents(q, feature_map, omega), exponents(k, feature_map, omega)
        sq = math.sqrt(omega.shape[0]) if feature_map == "favor" else 1.0
        phq = torch.exp(uq - uq.amax(-1, keepdim=True)) / sq
        ck = uk.amax(-1)  # [B, H, N] key exponents
        R = torch.where(on, ck[:, :, None, :], -math.inf).amax(-1)  # [B, H, N] per row
        R = torch.where(torch.isfinite(R), R, torch.zeros_like(R))
        # phi(k_j) e^{-R_i} = e^{uk_j - R_i} / sq, one matrix per row i.
        S = torch.einsum("bhim,bhijm->bhij", phq,
                         torch.exp(uk[:, :, None, :, :] - R[..., None, None]) / sq)
    W = b.exp()[:, (i[None, :] - i[:, None]) + N - 1]
    S = torch.where(on, S * W, torch.zeros((), dtype=torch.float64))
    den = S.sum(-1, keepdim=True)
    return torch.where(den + eps > 0, S @ v / (den + eps), torch.zeros((), dtype=torch.float64))


def bias_family(kind, H, N, size, dtype=torch.float64):
    r = torch.arange(-(N - 1), N, dtype=torch.float64)
    u = r / max(1, N - 1)
    if kind == "random":
        b = size * torch.randn(H, 2 * N - 1, dtype=torch.float64)
    elif kind == "ramp":  # spread = size, alternating direction per head
        b = torch.stack([0.5 * size * u * (1 if h % 2 == 0 else -1) for h in range(H)])
    elif kind == "alibi":
        b = (-size * u.abs()).expand(H, -1)
    elif kind == "slope+":
        b = torch.where(r > 0, size * u, 0.0).expand(H, -1)
    elif kind == "slope-":
        b = torch.where(r < 0, size * u, 0.0).expand(H, -1)
    else:  # a step
        b = torch.where(r >= -(N // 3), size, 0.0).expand(H, -1)
    return b.contiguous().to(dtype)


BIASES = [("random", 3.0), ("ramp", 200.0), ("ramp", 20.0), ("alibi", 60.0), ("slope+", 150.0),
          ("slope-", 150.0), ("step", 40.0)]


def problem(dtype, feature_map, N=40, B=2, H=2, D=4, Dv=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = 0.5 * torch.randn(B, H, N, D, generator=g, dtype=torch.float64)
    k = 0.5 * torch.randn(B, H, N, D, generator=g, dtype=torch.float64)
    v = torch.randn(B, H, N, Dv, generator=g, dtype=torch.float64)
    omega = longattn.random_features(8, D, seed=seed + 1, dtype=dtype) if feature_map == "favor" else None
    mask = torch.ones(B, N, dtype=torch.bool)
    mask[1, ::3] = False
    mask[1, : N // 4] = False
    return q.to(dtype), k.to(dtype), v.to(dtype), omega, mask


@pytest.mark.parametrize("kind,size", BIASES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_any_bias_matches_the_formula_forward_and_backward(kind, size, dtype):
    tol = 1e-10 if dtype == torch.float64 else 1e-4
    for feature_map, causal in itertools.product(MAPS, [False, True]):
        torch.manual_seed(len(kind) + int(size))
        q, k, v, omega, mask = problem(dtype, feature_map)
        b = bias_family(kind, 2, q.shape[2], size, dtype)
        leaves = [t.clone().requires_grad_() for t in (q, k, v, b)]
        eps = 1e-3
        out = longattn.kernelized_attention(*leaves[:3], feature_map=feature_map, causal=causal,
                                            key_padding_mask=mask, projection=omega, eps=eps,
                                            rel_bias=leaves[3])
        ref_leaves = [t.detach().double().requires_grad_() for t in leaves]
        ref = formula(*ref_leaves, feature_map, omega, causal, mask, eps)
        what = f"{feature_map} causal={causal}"
        assert (out.double() - ref).abs().max() <= tol * ref.abs().max(), what
        gz = torch.randn_like(ref)
        grads = torch.autograd.grad(out, leaves, gz.to(dtype))
        ref_grads = torch.autograd.grad(ref, ref_leaves, gz)
        for name, g, rg in zip("qkvb", grads, ref_grads):
            # relu: the kink at 0 is differentiated alike; a 1e-4 float allowance is still
            # relative to each gradient's scale.
            assert (g.double() - rg).abs().max() <= tol * rg.abs().max() + 1e-300, (what, name)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_kernelized_rpe_attention_any_bias(dtype):
    # On features: the formula with eps added to sum_j e^{b[j-i]} fq_i.fk_j as it stands.
    tol = 1e-10 if dtype == torch.float64 else 1e-4
    g = torch.Generator().manual_seed(3)
    B, H, N, m, Dv = 2, 2, 50, 6, 3
    fq, fk = torch.rand(B, H, N, m, generator=g, dtype=dtype), torch.rand(B, H, N, m, generator=g, dtype=dtype)
    v = torch.randn(B, H, N, Dv, generator=g, dtype=dtype)
    mask = torch.rand(B, N, generator=g) > 0.2
    for (kind, size), causal in itertools.product(BIASES, [False, True]):
        b = bias_family(kind, H, N, size, dtype)
        z = longattn.kernelized_rpe_attention(fq, fk, v, b, causal=causal, key_padding_mask=mask, eps=1e-2)
        i = torch.arange(N)
        W = b.double().exp()[:, (i[None, :] - i[:, None]) + N - 1]
        on = mask[:, None, None, :] & ((i[None, :] <= i[:, None]) if causal else True)
        S = torch.where(on, (fq.double() @ fk.double().transpose(-1, -2)) * W, torch.zeros((), dtype=torch.float64))
        ref = S @ v.double() / (S.sum(-1, keepdim=True) + 1e-2)
        assert (z.double() - ref).abs().max() <= tol * ref.abs().max(), (kind, size, causal)


def test_the_issue_example_is_exact_now():
    N = 64
    g = torch.Generator().manual_seed(0)
    pq = torch.randn(1, 1, N, 4, generator=g).exp()
    pk = torch.randn(1, 1, N, 4, generator=g).exp()
    v = torch.randn(1, 1, N, 2, generator=g)
    b = torch.linspace(-20, 20, 2 * N - 1)[None]
    z = longattn.kernelized_rpe_attention(pq, pk, v, b)
    i = torch.arange(N)
    S = (pq.double() @ pk.double().transpose(-1, -2)) * b.double().exp()[:, (i[None, :] - i[:, None]) + N - 1]
    ref = S @ v.double() / S.sum(-1, keepdim=True)
    assert (z.double() - ref).abs().max() <= 1e-4 * ref.abs().max()
    assert (z.abs().sum(-1) > 0).all()  # no zero rows


@pytest.mark.parametrize("feature_map", MAPS)
@pytest.mark.parametrize("causal", [False, True])
def test_eps_means_the_same_with_and_without_rel_bias(feature_map, causal):
    # A zero bias weighs every key by 1: the Toeplitz path must reproduce the linear-time
    # kernel including eps (large here, so that its meaning shows), outputs and gradients.
    q, k, v, omega, mask = problem(torch.float64, feature_map, N=30)
    q, k, v = 3 * q, 3 * k, v  # a spread of key exponents, so that the stabilisers matter
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    kw = dict(feature_map=feature_map, causal=causal, key_padding_mask=mask, projection=omega, eps=0.5)
    plain = longattn.kernelized_attention(*leaves, **kw)
    rpe = longattn.kernelized_attention(*leaves, rel_bias=torch.zeros(2, 59, dtype=torch.float64), **kw)
    torch.testing.assert_close(rpe, plain, rtol=1e-11, atol=1e-12)
    gz = torch.randn_like(plain)
    for a, b in zip(torch.autograd.grad(plain, leaves, gz), torch.autograd.grad(rpe, leaves, gz)):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("rel_bias", [False, True])
def test_masked_keys_non_finite_values_reach_nothing(bad, causal, rel_bias):
    # Issue 12 part 2: NaN / +-inf in a masked key's k or v: outputs and every gradient equal
    # those with zeros there, bit for bit; the masked keys' gradients are zero.
    for feature_map in MAPS:
        q, k, v, omega, mask = problem(torch.float32, feature_map, N=24)
        b = 0.5 * torch.randn(2, 47) if rel_bias else None
        off = ~mask[:, None, :, None]
        k0, v0 = k.masked_fill(off, 0.0), v.masked_fill(off, 0.0)
        kb, vb = k.masked_fill(off, bad), v.masked_fill(off, bad)

        def run(k, v):
            leaves = [t.clone().requires_grad_() for t in (q, k, v)]
            out = longattn.kernelized_attention(*leaves, feature_map=feature_map, causal=causal,
                                                key_padding_mask=mask, projection=omega, rel_bias=b)
            return [out] + list(torch.autograd.grad(out, leaves, torch.ones_like(out)))

        for x, y, name in zip(run(k0, v0), run(kb, vb), ["out", "gq", "gk", "gv"]):
            assert torch.isfinite(y).all(), (feature_map, name)
            assert torch.equal(x, y), (feature_map, name)
        gk, gv = run(kb, vb)[2:]
        assert (gk.masked_select(off) == 0).all() and (gv.masked_select(off) == 0).all()


def test_kernelized_rpe_attention_masked_non_finite():
    fq, fk, v = torch.rand(1, 2, 20, 3), torch.rand(1, 2, 20, 3), torch.randn(1, 2, 20, 2)
    mask = torch.ones(1, 20, dtype=torch.bool)
    mask[0, [0, 5, 19]] = False
    b = torch.linspace(-50, 50, 39).expand(2, -1).contiguous()
    off = ~mask[:, None, :, None]
    outs = []
    for bad in (0.0, math.nan, math.inf):
        leaves = [fq.clone().requires_grad_(), fk.masked_fill(off, bad).requires_grad_(),
                  v.masked_fill(off, bad).requires_grad_(), b.clone().requires_grad_()]
        z = longattn.kernelized_rpe_attention(*leaves, key_padding_mask=mask, eps=1e-3)
        outs.append([z] + list(torch.autograd.grad(z.sum(), leaves)))
    for other in outs[1:]:
        for x, y in zip(outs[0], other):
            assert torch.equal(x, y)


def test_non_finite_bias_is_an_error():
    fq = torch.rand(1, 2, 5, 3)
    for bad in (math.nan, math.inf):
        b = torch.zeros(2, 9)
        b[1, 4] = bad
        with pytest.raises(RuntimeError, match=r"rel_bias must be finite or -inf .* got 1 NaN or \+inf"):
            longattn.kernelized_rpe_attention(fq, fq, torch.randn(1, 2, 5, 4), b)


@pytest.mark.parametrize("feature_map", MAPS)
def test_feature_map_op_is_the_kernels_map(feature_map):
    # One implementation: longattn.feature_map (the kernels' code) against the definition, and
    # masked rows never read.
    x = torch.randn(2, 3, 7, 5, dtype=torch.float64)
    omega = longattn.random_features(6, 5, seed=2, dtype=torch.float64, heads=3) if feature_map == "favor" else None
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[1, 2] = False
    xb = x.clone()
    xb[1, :, 2] = math.nan
    xb.requires_grad_()
    phi, shift = longattn.feature_map(xb, feature_map=feature_map, projection=omega, key_padding_mask=mask)
    if feature_map in ("elu", "relu"):
        ref, ref_shift = features(x, feature_map), torch.zeros(2, 3, 7, dtype=torch.float64)
    else:
        u = x if feature_map == "sikf" else x @ omega.transpose(-1, -2)[None] - 0.5 * (x * x).sum(-1, keepdim=True)
        ref_shift = u.amax(-1)
        ref = torch.exp(u - ref_shift[..., None]) / (math.sqrt(6) if feature_map == "favor" else 1)
    on = mask[:, None, :]
    torch.testing.assert_close(phi[on.expand(-1, 3, -1)], ref[on.expand(-1, 3, -1)], rtol=1e-13, atol=1e-14)
    torch.testing.assert_close(shift[on.expand(-1, 3, -1)], ref_shift[on.expand(-1, 3, -1)])
    assert (phi[1, :, 2] == 0).all() and (shift[1, :, 2] == 0).all()
    (gx,) = torch.autograd.grad((phi * torch.randn_like(phi)).sum() + shift.sum(), xb)
    assert torch.isfinite(gx).all() and (gx[1, :, 2] == 0).all()
    xg = x.clone().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda t: longattn.feature_map(t, feature_map=feature_map, projection=omega, key_padding_mask=mask),
        (xg,))


@pytest.mark.parametrize("scale", [1.0, 64 ** -0.25])
def test_float32_favor_features_stay_on_the_fft_path(scale):
    """FAVOR+ keys at D = 64 span e^8 (q, k scaled by D^-1/4, as the modules do) to e^40 (raw) in
    their log-scales. In float32 the FFT's rounding could not resolve such rows: every row fell to
    the O(N) direct sum, making the operator O(N^2). float32 is now computed in double: it takes
    the direct sum exactly where float64 does (no row at the modules' scale; some at the raw
    scale, where even double's FFT cannot resolve rows e^40 below the head's largest term), and
    its result is float64's, rounded."""
    ops = torch.ops.longattn
    g = torch.Generator().manual_seed(0)
    B, H, N, D = 1, 2, 1024, 64
    q, k, v = (torch.randn(B, H, N, D, generator=g) * s for s in (scale, scale, 1.0))
    w = longattn.random_features(64, D, seed=0)
    b = 0.1 * torch.randn(H, 2 * N - 1, generator=g)
    fq, _, _ = ops._feature_map_forward(q, "favor", w, None)
    fk, ck, _ = ops._feature_map_forward(k, "favor", w, None)
    R = ck.amax(2, True).expand_as(ck).contiguous()
    assert (ck.amax(2) - ck.amin(2)).min() > 6  # the spread this test is about
    out, den, direct = ops._kernelized_rpe_forward(fq, fk, v, b, ck, R, None, False, 0.0)
    out64, _, direct64 = ops._kernelized_rpe_forward(fq.double(), fk.double(), v.double(), b.double(), ck.double(),
                                                     R.double(), None, False, 0.0)
    assert torch.equal(direct, direct64)
    if scale < 1:
        assert direct.sum().item() == 0
    torch.testing.assert_close(out.double(), out64, rtol=0, atol=1e-5 * out64.abs().max().item())
