"""The kernelized_attention and random_features operators through torch."""
import itertools
import math

import pytest
import torch

import longattn

MAPS = ["elu", "relu", "sikf", "favor"]


def features(x, fm, omega, shift):
    """phi(x) for the last dim; exponential maps divided by e^shift (shift broadcast)."""
    if fm == "elu":
        return torch.nn.functional.elu(x) + 1
    if fm == "relu":
        return x.clamp_min(0)
    if fm == "sikf":
        return torch.exp(x - shift)
    u = torch.einsum("...d,...md->...m", x, omega) - (x * x).sum(-1, keepdim=True) / 2
    return torch.exp(u - shift) / math.sqrt(omega.shape[-2])


def exponents(x, fm, omega):
    if fm == "sikf":
        return x
    return torch.einsum("...d,...md->...m", x, omega) - (x * x).sum(-1, keepdim=True) / 2


def reference(q, k, v, fm, causal=False, mask=None, omega=None, eps=1e-6):
    """Dense fp64 formula of the kernel header: shifts = the query row's max exponent and the
    max exponent over the keys that take part for each query."""
    q, k, v = q.double(), k.double(), v.double()
    B, H, Nq, Nk = q.shape[0], q.shape[1], q.shape[2], k.shape[2]
    if omega is not None:
        omega = omega.double()
        omega = omega[None, :, None] if omega.dim() == 3 else omega[None, None, None]
    allowed = torch.ones(B, 1, Nq, Nk, dtype=torch.bool)
    if mask is not None:
        allowed = allowed & mask[:, None, None, :]
    if causal:
        allowed = allowed & torch.ones(Nq, Nk, dtype=torch.bool).tril()
    if fm in ("sikf", "favor"):
        uq, uk = exponents(q, fm, omega), exponents(k, fm, omega)
        cq = uq.amax(-1, keepdim=True)                                       # [B, H, Nq, 1]
        kmax = uk.amax(-1)[:, :, None, :].expand(B, H, Nq, Nk)
        R = kmax.masked_fill(~allowed, -math.inf).amax(-1)                    # [B, H, Nq]
        R = torch.where(torch.isinf(R), torch.zeros_like(R), R)
        fq = features(q, fm, omega, cq)
        # phi(k_j) e^{-R_i}: per (i, j), from the key's exponents.
        fk = torch.exp(uk[:, :, None, :, :] - R[..., None, None])
        if fm == "favor":
            fk = fk / math.sqrt(omega.shape[-2])
        w = torch.einsum("bhim,bhijm->bhij", fq, fk)
    else:
        w = features(q, fm, None, None) @ features(k, fm, None, None).transpose(-1, -2)
    w = w.masked_fill(~allowed, 0.0)
    den = w.sum(-1, keepdim=True) + eps
    out = (w @ v) / den
    return torch.where(den > 0, out, torch.zeros_like(out))


def make(fm, B=2, H=3, N=9, D=4, Dv=3, dtype=torch.float64, per_head=False, m=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(B, H, N, D, generator=g, dtype=dtype) for _ in range(2))
    v = torch.randn(B, H, N, Dv, generator=g, dtype=dtype)
    omega = None
    if fm == "favor":
        omega = longattn.random_features(m, D, seed=seed, heads=H if per_head else None,
                                         dtype=dtype)
    return q, k, v, omega


@pytest.mark.parametrize("fm,causal", list(itertools.product(MAPS, [False, True])))
def test_gradcheck_fp64_and_reference(fm, causal):
    q, k, v, omega = make(fm, per_head=causal)
    mask = torch.rand(2, 9, generator=torch.Generator().manual_seed(1)) > 0.3
    mask[1] = False            # a batch with no key: zero output and gradient
    mask[1, 8] = causal        # causal: only the last query of batch 1 sees a key
    mask[0, 0] = False         # causal: query 0 of batch 0 sees none
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    for eps in (1e-6, 0.5):  # a large eps exercises the gradient through the stabilisers

        def f(q, k, v):
            return longattn.kernelized_attention(q, k, v, feature_map=fm, causal=causal,
                                                 key_padding_mask=mask, projection=omega, eps=eps)

        assert torch.autograd.gradcheck(f, (q, k, v))
        torch.testing.assert_close(f(q, k, v), reference(q, k, v, fm, causal, mask, omega, eps),
                                   rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("fm", MAPS)
def test_non_contiguous_and_cross_attention(dtype, fm):
    B, H, Nq, Nk, D = 2, 3, 7, 11, 6
    q = torch.randn(B, Nq, H, D, dtype=dtype).transpose(1, 2)
    k = torch.randn(B, Nk, H, D, dtype=dtype).transpose(1, 2)
    v = torch.randn(B, H, 5, Nk, dtype=dtype).transpose(-1, -2)
    omega = longattn.random_features(8, D, seed=3, dtype=dtype) if fm == "favor" else None
    out = longattn.kernelized_attention(q, k, v, feature_map=fm, projection=omega)
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-11, atol=1e-12)
    torch.testing.assert_close(out.double(), reference(q, k, v, fm, omega=omega), **tol)


def test_favor_approaches_softmax_attention():
    """With q, k scaled by D^-1/4, favor estimates softmax(q k^T / sqrt(D)); the error falls
    like 1/sqrt(m) (the kernel tests derive the exact bound; here: consistency with
    longattn.softmax_attention and the rate)."""
    B, H, N, D = 1, 2, 64, 16
    q, k = (0.5 * torch.randn(B, H, N, D, dtype=torch.float64) for _ in range(2))
    v = torch.randn(B, H, N, D, dtype=torch.float64)
    exact = longattn.softmax_attention(q, k, v)
    s = D ** -0.25
    rms = {}
    for m in (16, 1024):
        errs = []
        for seed in range(4):
            w = longattn.random_features(m, D, seed=seed, dtype=torch.float64)
            est = longattn.kernelized_attention(q * s, k * s, v, feature_map="favor",
                                                projection=w, eps=0.0)
            errs.append(((est - exact) ** 2).mean())
        rms[m] = float(torch.stack(errs).mean().sqrt())
    assert rms[1024] < rms[16] / 4, rms  # 64x the features: ~8x smaller error expected


def test_no_key_gives_zeros_not_nan():
    for fm in MAPS:
        q, k, v, omega = make(fm, B=1, dtype=torch.float32)
        q, k, v = (t.requires_grad_() for t in (q, k, v))
        mask = torch.zeros(1, 9, dtype=torch.bool)
        out = longattn.kernelized_attention(q, k, v, feature_map=fm, key_padding_mask=mask,
                                            projection=omega, eps=0.0)
        assert torch.equal(out, torch.zeros_like(out))
        out.sum().backward()
        for t in (q, k, v):
            assert torch.equal(t.grad, torch.zeros_like(t))


@pytest.mark.parametrize("shape_q,shape_k", [((0, 2, 5, 4), (0, 2, 5, 4)),
                                             ((1, 2, 0, 4), (1, 2, 0, 4)),
                                             ((1, 2, 3, 4), (1, 2, 0, 4)),
                                             ((1, 2, 3, 0), (1, 2, 3, 0))])
@pytest.mark.parametrize("fm", ["elu", "favor"])
def test_empty_inputs(shape_q, shape_k, fm):
    q = torch.randn(*shape_q, requires_grad=True)
    k = torch.randn(*shape_k, requires_grad=True)
    v = torch.randn(*shape_k[:3], 6, requires_grad=True)
    omega = longattn.random_features(4, max(shape_q[3], 1), seed=0)[:, :shape_q[3]].contiguous() \
        if fm == "favor" else None
    out = longattn.kernelized_attention(q, k, v, feature_map=fm, projection=omega)
    assert out.shape == (shape_q[0], shape_q[1], shape_q[2], 6)
    if shape_q[3] > 0 or fm != "favor":
        assert torch.all(out == 0)
    out.sum().backward()
    assert q.grad.shape == q.shape and k.grad.shape == k.shape


def _qkv(B=2, H=3, N=5, D=4):
    return torch.randn(B, H, N, D), torch.randn(B, H, N, D), torch.randn(B, H, N, D)


BAD_INPUTS = [
    ("unknown map", dict(feature_map="softmax"),
     "unknown feature_map 'softmax'; known: 'elu', 'relu', 'sikf', 'favor'"),
    ("favor without projection", dict(feature_map="favor"),
     "feature_map='favor' needs projection [m, D] or [H, m, D] with D = 4"),
    ("projection head dim", dict(feature_map="favor", projection=torch.randn(8, 5)),
     "projection must have shape [m, D] = [*, 4], got [8, 5]"),
    ("projection heads", dict(feature_map="favor", projection=torch.randn(2, 8, 4)),
     "projection must have shape [H, m, D] = [3, *, 4], got [2, 8, 4]"),
    ("projection rank", dict(feature_map="favor", projection=torch.randn(8)),
     "projection must have shape [m, D] or [H, m, D] with H = 3, D = 4, got [8]"),
    ("projection dtype", dict(feature_map="favor", projection=torch.randn(8, 4).double()),
     "projection must have the dtype of q (Float), got Double"),
    ("projection for elu", dict(feature_map="elu", projection=torch.randn(8, 4)),
     "projection is used only by feature_map='favor', got feature_map='elu'"),
    ("mask shape", dict(feature_map="elu", key_padding_mask=torch.ones(2, 4, dtype=torch.bool)),
     "key_padding_mask must have shape [B, Nk] = [2, 5], got [2, 4]"),
    ("mask dtype", dict(feature_map="elu", key_padding_mask=torch.ones(2, 5)),
     "key_padding_mask must be bool [B, Nk]"),
    ("negative eps", dict(feature_map="elu", eps=-1.0), "eps must be finite and >= 0, got -1"),
]


@pytest.mark.parametrize("desc,kwargs,message", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_messages(desc, kwargs, message):
    q, k, v = _qkv()
    with pytest.raises(RuntimeError) as e:
        longattn.kernelized_attention(q, k, v, **kwargs)
    assert "longattn.kernelized_attention" in str(e.value)
    assert message in str(e.value)


def test_shape_errors_and_causal_cross():
    q, k, v = _qkv()
    with pytest.raises(RuntimeError, match=r"k must have shape \[B, H, Nk, D\] = \[2, 3, \*, 4\]"):
        longattn.kernelized_attention(q, k[..., :3], v, feature_map="elu")
    with pytest.raises(RuntimeError, match="causal=True needs Nq == Nk, got Nq = 5 and Nk = 3"):
        longattn.kernelized_attention(q, k[:, :, :3], v[:, :, :3], feature_map="elu", causal=True)


def test_random_features():
    a = longattn.random_features(20, 8, seed=7)
    assert a.shape == (20, 8) and a.dtype == torch.float32
    assert torch.equal(a, longattn.random_features(20, 8, seed=7))
    assert not torch.equal(a, longattn.random_features(20, 8, seed=8))
    b = longattn.random_features(20, 8, seed=7, heads=3, dtype=torch.float64)
    assert b.shape == (3, 20, 8) and b.dtype == torch.float64
    blk = b[0, :8] / b[0, :8].norm(dim=1, keepdim=True)
    torch.testing.assert_close(blk @ blk.T, torch.eye(8, dtype=torch.float64), atol=1e-12, rtol=0)
    s = longattn.random_features(16, 8, seed=1, scaling="sqrt_d", dtype=torch.float64)
    torch.testing.assert_close(s.norm(dim=1), torch.full((16,), math.sqrt(8), dtype=torch.float64))
    with pytest.raises(RuntimeError, match="unknown scaling 'gauss'; known: 'chi', 'sqrt_d'"):
        longattn.random_features(4, 4, seed=0, scaling="gauss")


def test_cpp_and_python_call_the_same_operator():
    q, k, v = _qkv()
    a = longattn.kernelized_attention(q, k, v, feature_map="sikf", causal=True)
    b = torch.ops.longattn.kernelized_attention(q, k, v, feature_map="sikf", causal=True)
    assert torch.equal(a, b)
