"""yoso_attention and yoso_expectation through torch: references, gradients, statistics, errors."""
import math

import pytest
import torch
import torch.nn.functional as F

import longattn


def expectation_weights(q, k, tau, mask=None):
    """E_ij = (1 − arccos(q̂ᵀk̂)/π)^τ in float64, masked keys (and queries when Nq == Nk) zero."""
    x = F.normalize(q.double(), dim=-1) @ F.normalize(k.double(), dim=-1).transpose(-1, -2)
    e = (1 - torch.arccos(x.clamp(-1, 1)) / math.pi) ** tau
    if mask is not None:
        e = e * mask[:, None, None, :]
        if q.shape[2] == k.shape[2]:
            e = e * mask[:, None, :, None]
    return e


class SurrogateE(torch.autograd.Function):
    """E(x) whose derivative is replaced by the paper's (τ/2)·E(x) (reference for the surrogate)."""

    @staticmethod
    def forward(ctx, x, tau):
        e = (1 - torch.arccos(x.clamp(-1, 1)) / math.pi) ** tau
        ctx.save_for_backward(e)
        ctx.tau = tau
        return e

    @staticmethod
    def backward(ctx, g):
        (e,) = ctx.saved_tensors
        return g * 0.5 * ctx.tau * e, None


def surrogate_reference(q, k, v, tau, mask=None, weights=None):
    """Y = (W ⊙ M) V with W = E (or given collision frequencies) and the surrogate backward."""
    qn, kn = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
    x = qn @ kn.transpose(-1, -2)
    if weights is None:
        a = SurrogateE.apply(x, tau)
    else:  # same value as `weights`, gradient (τ/2)·weights through x
        a = weights + 0.5 * tau * weights * (x - x.detach())
    if mask is not None:
        a = a * mask[:, None, None, :].to(a.dtype)
        if q.shape[2] == k.shape[2]:
            a = a * mask[:, None, :, None].to(a.dtype)
    return a @ v


def collision_frequencies(q, k, tau, m, seed, mask, hashing):
    """(1/m)·#hashes in which q_i and k_j share a bucket, from the operator's own codes."""
    qc, kc = torch.ops.longattn._yoso_hash(q, k, mask, tau, m, seed, 0 if hashing == "gaussian" else 1)
    same = (qc[..., :, None] == kc[..., None, :]) & (qc[..., :, None] >= 0)
    return same.double().mean(dim=2)  # [B, H, Nq, Nk]


def qkv(B=2, H=3, Nq=11, Nk=11, D=6, Dv=5, dtype=torch.float64, grad=False):
    return [torch.randn(*s, dtype=dtype, requires_grad=grad)
            for s in ((B, H, Nq, D), (B, H, Nk, D), (B, H, Nk, Dv))]


@pytest.mark.parametrize("use_mask", [False, True])
def test_expectation_forward_and_exact_gradcheck(use_mask):
    q, k, v = qkv(B=2, H=1, Nq=7, Nk=7, D=4, Dv=3, grad=True)
    mask = (torch.rand(2, 7) > 0.3) if use_mask else None
    tau = 4

    def f(q, k, v):
        return longattn.yoso_expectation(q, k, v, hash_bits=tau, key_padding_mask=mask)

    torch.testing.assert_close(f(q, k, v), expectation_weights(q, k, tau, mask) @ v,
                               rtol=1e-10, atol=1e-12)
    assert torch.autograd.gradcheck(f, (q, k, v))


@pytest.mark.parametrize("use_mask", [False, True])
def test_surrogate_backwards_match_reference(use_mask):
    q, k, v = qkv(grad=True)
    mask = (torch.rand(2, 11) > 0.3) if use_mask else None
    tau, g = 5, torch.randn(2, 3, 11, 5, dtype=torch.float64)
    ref = torch.autograd.grad(surrogate_reference(q, k, v, tau, mask), (q, k, v), g)
    for out in (longattn.yoso_expectation(q, k, v, hash_bits=tau, key_padding_mask=mask,
                                          backward="surrogate"),
                longattn.yoso_attention(q, k, v, hash_bits=tau, num_hashes=4, seed=3,
                                        key_padding_mask=mask, backward="exact")):
        for a, b in zip(torch.autograd.grad(out, (q, k, v), g), ref):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("hashing", ["gaussian", "hadamard"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_lsh_forward_and_backward_equal_collision_sums(hashing, dtype):
    """With the operator's own codes, Y and the LSH surrogate gradient are exact sums."""
    q, k, v = qkv(Nq=30, Nk=30, dtype=dtype, grad=True)
    mask = torch.rand(2, 30) > 0.2
    tau, m, seed = 2, 6, 11
    w = collision_frequencies(q.detach(), k.detach(), tau, m, seed, mask, hashing)
    out = longattn.yoso_attention(q, k, v, hash_bits=tau, num_hashes=m, seed=seed,
                                  key_padding_mask=mask, hashing=hashing)
    qd, kd, vd = (t.detach().double().requires_grad_() for t in (q, k, v))
    ref = surrogate_reference(qd, kd, vd, tau, mask, weights=w)
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(out.double(), ref, **tol)
    g = torch.randn_like(out)
    for a, b in zip(torch.autograd.grad(out, (q, k, v), g),
                    torch.autograd.grad(ref, (qd, kd, vd), g.double())):
        torch.testing.assert_close(a.double(), b, **tol)


def test_mean_over_seeds_approaches_expectation():
    # Unbiased for Gaussian hashing: the mean of S = 300 calls is within 5 standard errors of
    # YOSO-E elementwise (CLT with the sample standard deviation; 100 elements).
    q, k, v = qkv(B=1, H=1, Nq=20, Nk=20, Dv=5)
    tau, S = 3, 300
    ys = torch.stack([longattn.yoso_attention(q, k, v, hash_bits=tau, num_hashes=16, seed=s)
                      for s in range(S)])
    e = longattn.yoso_expectation(q, k, v, hash_bits=tau)
    se = ys.std(0) / math.sqrt(S)
    assert torch.all((ys.mean(0) - e).abs() <= 5 * se + 1e-12)
    assert (5 * se).max() < 0.1 * e.abs().max()  # the bound is tight enough to mean something


def test_seed_determinism_and_thread_counts():
    q, k, v = qkv(Nq=300, Nk=300, Dv=16, dtype=torch.float32)  # > 1 MFLOP: several threads
    outs = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        outs.append(longattn.yoso_attention(q, k, v, hash_bits=6, num_hashes=16, seed=5,
                                            hashing="hadamard"))
    torch.set_num_threads(2)
    assert torch.equal(outs[0], outs[1])
    other = longattn.yoso_attention(q, k, v, hash_bits=6, num_hashes=16, seed=6, hashing="hadamard")
    assert not torch.equal(outs[0], other)


def test_padding_masked_keys_never_contribute_and_masked_queries_are_zero():
    q, k, v = qkv(Nq=16, Nk=16, grad=False)
    mask = torch.rand(2, 16) > 0.3
    mask[1, :4] = False
    q2, k2, v2 = q.clone(), k.clone(), v.clone()
    k2[~mask[:, None, :].expand(2, 3, 16)] = 9.0
    v2[~mask[:, None, :].expand(2, 3, 16)] = -7.0
    for op in (lambda *a: longattn.yoso_attention(*a, hash_bits=3, num_hashes=5, seed=1,
                                                  key_padding_mask=mask),
               lambda *a: longattn.yoso_expectation(*a, hash_bits=3, key_padding_mask=mask)):
        a, b = op(q, k, v), op(q2, k2, v2)
        assert torch.equal(a, b)
        assert torch.all(a[1, :, :4] == 0)


def test_non_contiguous_inputs():
    B, H, N, D = 2, 3, 9, 4
    q = torch.randn(B, N, H, D).transpose(1, 2)
    k = torch.randn(B, N, H, D).transpose(1, 2)
    v = torch.randn(B, H, 5, N).transpose(-1, -2)
    for op in (lambda *a: longattn.yoso_attention(*a, hash_bits=3, num_hashes=4, seed=2),
               lambda *a: longattn.yoso_expectation(*a, hash_bits=3)):
        torch.testing.assert_close(op(q, k, v), op(q.contiguous(), k.contiguous(), v.contiguous()))


@pytest.mark.parametrize("shape_q,shape_k", [((0, 2, 5, 4), (0, 2, 5, 4)), ((1, 2, 0, 4), (1, 2, 0, 4)),
                                             ((1, 2, 3, 4), (1, 2, 0, 4))])
def test_empty_inputs(shape_q, shape_k):
    q = torch.randn(*shape_q, requires_grad=True)
    k = torch.randn(*shape_k, requires_grad=True)
    v = torch.randn(*shape_k[:3], 6, requires_grad=True)
    for out in (longattn.yoso_attention(q, k, v, hash_bits=4, num_hashes=2, seed=0),
                longattn.yoso_expectation(q, k, v, hash_bits=4)):
        assert out.shape == (shape_q[0], shape_q[1], shape_q[2], 6)
        assert torch.all(out == 0)
        out.sum().backward()
        assert q.grad.shape == q.shape and k.grad.shape == k.shape


BAD = [
    ("hash_bits 0", dict(hash_bits=0), "hash_bits must be in [1, 30]", "got 0"),
    ("hash_bits 31", dict(hash_bits=31), "hash_bits must be in [1, 30]", "got 31"),
    ("num_hashes 0", dict(num_hashes=0), "num_hashes must be in [1, 65536]", "got 0"),
    ("hashing", dict(hashing="simhash"), "hashing must be 'gaussian' or 'hadamard'", "got 'simhash'"),
    ("backward", dict(backward="true"), "backward must be 'lsh' or 'exact'", "got 'true'"),
    ("k shape", dict(k=torch.randn(2, 3, 5, 3)), "k must have shape [B, H, Nk, D] = [2, 3, *, 4]", "got [2, 3, 5, 3]"),
    ("v length", dict(v=torch.randn(2, 3, 4, 4)), "v must have shape [B, H, Nk, Dv] = [2, 3, 5, *]", "got [2, 3, 4, 4]"),
    ("q rank", dict(q=torch.randn(3, 5, 4)), "q must have 4 dimensions [B, H, Nq, D]", "got 3"),
    ("mask", dict(key_padding_mask=torch.ones(2, 4, dtype=torch.bool)), "key_padding_mask must have shape [B, Nk] = [2, 5]", "got [2, 4]"),
    ("dtype", dict(q=torch.randn(2, 3, 5, 4).int()), "q must be float32, float64, bfloat16 or float16", "got Int"),
    ("mixed dtype", dict(q=torch.randn(2, 3, 5, 4).half()), "k must have the dtype of q (Half)", "got Float"),
    ("head dim 0", dict(q=torch.randn(2, 3, 5, 0), k=torch.randn(2, 3, 5, 0)), "head dim D >= 1", "got D = 0"),
]


@pytest.mark.parametrize("desc,override,expected,given", BAD, ids=[b[0] for b in BAD])
def test_bad_inputs_name_expected_and_given(desc, override, expected, given):
    args = dict(q=torch.randn(2, 3, 5, 4), k=torch.randn(2, 3, 5, 4), v=torch.randn(2, 3, 5, 4),
                hash_bits=4, num_hashes=2, seed=0)
    args.update(override)
    with pytest.raises(RuntimeError) as e:
        longattn.yoso_attention(args.pop("q"), args.pop("k"), args.pop("v"), **args)
    assert "longattn.yoso_attention" in str(e.value)
    assert expected in str(e.value) and given in str(e.value)
    if desc in ("hash_bits 0", "k shape", "head dim 0"):  # the same checks guard yoso_expectation
        args = dict(q=torch.randn(2, 3, 5, 4), k=torch.randn(2, 3, 5, 4), v=torch.randn(2, 3, 5, 4),
                    hash_bits=4)
        args.update({n: x for n, x in override.items() if n in ("hash_bits", "q", "k")})
        with pytest.raises(RuntimeError, match="longattn.yoso_expectation"):
            longattn.yoso_expectation(args.pop("q"), args.pop("k"), args.pop("v"), **args)


def test_expectation_bad_backward():
    q, k, v = qkv()
    with pytest.raises(RuntimeError, match="backward must be 'exact' or 'surrogate', got 'lsh'"):
        longattn.yoso_expectation(q, k, v, hash_bits=3, backward="lsh")
