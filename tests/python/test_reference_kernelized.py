"""The reference path (issue #17) of kernelized_attention, feature_map and kernelized_rpe_attention:
the ATen composites (ops/reference/kernelized_attention.cpp, kernelized_rpe.cpp) against the fused
CPU kernels and the fp64 formulas, their peak memory, and the dispatch that sends other devices to
them."""
import itertools
import math
import re

import pytest
import torch

import longattn
from peak_memory import peak_extra_bytes
from test_kernelized_rel_bias import bias_family, formula

MAPS = ["elu", "relu", "sikf", "favor"]
F64 = torch.float64


def outputs_and_grads(fn, inputs, path, gz_seed=0):
    leaves = [t.detach().clone().requires_grad_(t.is_floating_point()) for t in inputs]
    out = fn(*leaves, path=path)
    gz = torch.randn(out.shape, generator=torch.Generator().manual_seed(gz_seed), dtype=out.dtype)
    wrt = [t for t in leaves if t.requires_grad]
    return [out.detach()] + list(torch.autograd.grad(out, wrt, gz))


def assert_paths_agree(fn, inputs, tol, what=""):
    """The reference path against the fused one: output and every gradient, relative to its scale.
    A gradient can cancel to eps size (one key: the output depends on q only through eps), so the
    scale is at least the inputs' O(1) scale times 1e-5."""
    fused = outputs_and_grads(fn, inputs, "fused")
    ref = outputs_and_grads(fn, inputs, "reference")
    for i, (a, b) in enumerate(zip(fused, ref)):
        a, b = a.double(), b.double()
        assert torch.equal(a.isnan(), b.isnan()), (what, i, "NaN pattern")
        a, b = a.nan_to_num(), b.nan_to_num()
        scale = max(a.abs().max().item(), 1e-5)
        assert (a - b).abs().max() <= tol * scale, (what, i, (a - b).abs().max().item())


def problem(fm, B=2, H=3, Nq=9, Nk=None, D=4, Dv=3, dtype=F64, seed=0, m=6, per_head=True):
    Nk = Nq if Nk is None else Nk
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, Nq, D, generator=g, dtype=F64).to(dtype)
    k = torch.randn(B, H, Nk, D, generator=g, dtype=F64).to(dtype)
    v = torch.randn(B, H, Nk, Dv, generator=g, dtype=F64).to(dtype)
    omega = (longattn.random_features(m, D, seed=seed, heads=H if per_head else None, dtype=dtype)
             if fm == "favor" else None)
    mask = torch.rand(B, Nk, generator=g) > 0.3
    mask[1] = False            # a batch with no key: zero output and gradients
    mask[1, Nk // 2] = True    # causal: rows before it have no key
    return q, k, v, omega, mask


def attention(fm, causal, mask, omega, eps=1e-6, rel_bias=None):
    def fn(q, k, v, *rest, path):
        b = rest[0] if rest else rel_bias
        return longattn.kernelized_attention(q, k, v, feature_map=fm, causal=causal, key_padding_mask=mask,
                                             projection=omega, eps=eps, rel_bias=b, path=path)
    return fn


# N = 100 spans two causal chunks of 64 rows (the state between chunks), N = 1 and 7 one.
@pytest.mark.parametrize("fm,causal", list(itertools.product(MAPS, [False, True])))
@pytest.mark.parametrize("N", [1, 7, 100])
@pytest.mark.parametrize("masked", [False, True])
def test_matches_fused_float64(fm, causal, N, masked):
    q, k, v, omega, mask = problem(fm, Nq=N)
    assert_paths_agree(attention(fm, causal, mask if masked else None, omega), (q, k, v), 1e-10,
                       f"{fm} causal={causal} N={N}")


@pytest.mark.parametrize("fm", MAPS)
def test_cross_attention_and_eps(fm):
    q, k, v, omega, mask = problem(fm, Nq=5, Nk=70)
    for eps in (0.0, 1e-6, 0.3):
        assert_paths_agree(attention(fm, False, mask, omega, eps=eps), (q, k, v), 1e-10, f"{fm} eps={eps}")


@pytest.mark.parametrize("fm,causal", list(itertools.product(MAPS, [False, True])))
def test_non_finite_masked_keys_and_future_values(fm, causal):
    q, k, v, omega, mask = problem(fm, Nq=80)
    k[0, :, ~mask[0]] = float("nan")  # masked keys of batch 0
    v[0, :, ~mask[0]] = float("inf")
    fn = attention(fm, causal, mask, omega)
    assert_paths_agree(fn, (q, k, v), 1e-10, "masked NaN")
    ref = outputs_and_grads(fn, (q, k, v), "reference")
    assert all(t.isfinite().all() for t in ref)
    if causal:  # a NaN value and a NaN key at t reach nothing before t
        # (The fused kernel's plain in-chunk GEMM lets a NaN value reach the earlier rows of its
        # 64-row chunk, 0 * NaN: that is the kernel's, checked here for the reference only.)
        for t, what in ((75, "v"), (70, "k")):
            q2, k2, v2, _, _ = problem(fm, Nq=80)
            mask2 = torch.ones_like(mask)
            (v2 if what == "v" else k2)[:, :, t] = float("nan")
            fn2 = attention(fm, True, mask2, omega)
            for path in ("reference",):
                out, gq, gk, gv = outputs_and_grads(fn2, (q2, k2, v2), path)
                assert out[:, :, :t].isfinite().all() and gq[:, :, :t].isfinite().all(), (what, path)
                if what == "v":  # the other values' gradients come from finite rows' weights
                    assert gv[:, :, t + 1:].isfinite().all()
                if fm != "relu":  # relu maps NaN to 0, as the kernel
                    assert out[:, :, t:].isnan().any(), (what, path)


@pytest.mark.parametrize("fm", MAPS)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("kind,size", [("ramp", 40.0), ("slope+", 150.0), ("random", 3.0), ("step", 40.0)])
def test_rel_bias_exact_for_large_spreads(fm, causal, kind, size):
    # linspace(-20, 20) is the ramp of spread 40; slope+ 150 a steep one-sided slope.
    q, k, v, omega, mask = problem(fm, B=2, H=2, Nq=40, per_head=False)  # formula: shared omega
    b = bias_family(kind, 2, 40, size)
    eps = 1e-3
    assert_paths_agree(attention(fm, causal, mask, omega, eps=eps), (q, k, v, b), 1e-10, f"{kind} {fm}")
    # ... and against the formula itself, in fp64.
    leaves = [t.clone().requires_grad_() for t in (q, k, v, b)]
    out = longattn.kernelized_attention(*leaves[:3], feature_map=fm, causal=causal, key_padding_mask=mask,
                                        projection=omega, eps=eps, rel_bias=leaves[3], path="reference")
    ref_leaves = [t.detach().clone().requires_grad_() for t in leaves]
    ref = formula(*ref_leaves, fm, omega, causal, mask, eps)
    assert (out - ref).abs().max() <= 1e-10 * ref.abs().max()
    gz = torch.randn_like(ref)
    for g, rg in zip(torch.autograd.grad(out, leaves, gz), torch.autograd.grad(ref, ref_leaves, gz)):
        assert (g - rg).abs().max() <= 1e-10 * rg.abs().max() + 1e-300


@pytest.mark.parametrize("causal", [False, True])
def test_kernelized_rpe_attention_matches_fused(causal):
    g = torch.Generator().manual_seed(3)
    B, H, N, m, Dv = 2, 2, 70, 5, 3
    fq, fk = torch.rand(B, H, N, m, generator=g, dtype=F64), torch.rand(B, H, N, m, generator=g, dtype=F64)
    v = torch.randn(B, H, N, Dv, generator=g, dtype=F64)
    mask = torch.rand(B, N, generator=g) > 0.2
    fk[0, :, ~mask[0]] = float("nan")
    v[0, :, ~mask[0]] = float("nan")
    b = torch.linspace(-20, 20, 2 * N - 1, dtype=F64).expand(H, -1).contiguous()
    b[1, : N // 2] = -math.inf  # offsets that take no part
    for eps in (0.0, 1e-2):
        def fn(fq, fk, v, b, path):
            return longattn.kernelized_rpe_attention(fq, fk, v, b, causal=causal, key_padding_mask=mask, eps=eps,
                                                     path=path)
        assert_paths_agree(fn, (fq, fk, v, b), 1e-10, f"eps={eps}")


def test_rpe_non_finite_bias_is_an_error_on_both_paths():
    x = torch.rand(1, 1, 4, 2)
    for bad in (math.nan, math.inf):
        b = torch.zeros(1, 7)
        b[0, 3] = bad
        with pytest.raises(RuntimeError, match="rel_bias must be finite"):
            longattn.kernelized_rpe_attention(x, x, x, b, path="reference")


@pytest.mark.parametrize("fm", MAPS)
def test_feature_map_matches_fused(fm):
    q, _, _, omega, mask = problem(fm, Nq=11)
    q[1, :, ~mask[1]] = float("nan")
    res = {}
    for path in ("fused", "reference"):
        x = q.clone().requires_grad_()
        phi, shift = longattn.feature_map(x, feature_map=fm, projection=omega, key_padding_mask=mask, path=path)
        g1 = torch.randn(phi.shape, generator=torch.Generator().manual_seed(1), dtype=F64)
        g2 = torch.randn(shift.shape, generator=torch.Generator().manual_seed(2), dtype=F64)
        res[path] = (phi, shift, torch.autograd.grad((phi * g1).sum() + (shift * g2).sum(), x)[0])
    for a, b in zip(res["fused"], res["reference"]):
        assert a.isfinite().all() and (a - b).abs().max() <= 1e-12 * a.abs().max() + 1e-300


@pytest.mark.parametrize("fm,causal", [("elu", False), ("favor", True), ("sikf", False), ("relu", True)])
def test_float32_and_bfloat16_against_fused(fm, causal):
    for dtype, tol in ((torch.float32, 1e-4), (torch.bfloat16, 3e-2)):
        q, k, v, omega, mask = problem(fm, Nq=100, dtype=dtype)
        omega = omega.float() if omega is not None else None
        assert_paths_agree(attention(fm, causal, mask, omega), (q, k, v), tol, f"{dtype}")
        b = bias_family("ramp", 3, 100, 10.0, dtype)
        assert_paths_agree(attention(fm, causal, mask, omega), (q, k, v, b), tol, f"{dtype} rel_bias")
        out = longattn.kernelized_attention(q, k, v, feature_map=fm, causal=causal, projection=omega, path="reference")
        assert out.dtype == dtype


def test_bad_path_names_both():
    x = torch.randn(1, 1, 3, 2)
    with pytest.raises(RuntimeError, match="'fused'.*'reference'"):
        longattn.kernelized_attention(x, x, x, feature_map="elu", path="gpu")


def test_random_features_device_same_bits():
    w = longattn.random_features(8, 4, seed=3, heads=2)
    assert torch.equal(w, longattn.random_features(8, 4, seed=3, heads=2, device="cpu"))
    meta = longattn.random_features(8, 4, seed=3, heads=2, device="meta")
    assert meta.device.type == "meta" and meta.shape == w.shape


# ------------------------------------------------------------------ peak memory at N = 16384
# The formulas of ops/reference/kernelized_attention.cpp and kernelized_rpe.cpp, in bytes, for the
# public call forward + backward: the reference's own terms plus what autograd holds around it
# (the saved output and inverse denominators, the output's gradient, the accumulated .grad).
E = 1 << 24
SLACK = 16 << 20


def kernelized_formula(B, H, N, D, Dv, m, causal, s=4):
    BH, X = B * H, max(m, Dv + 1, D)
    autograd = BH * N * (Dv + 1) + BH * N * Dv + BH * N * (2 * D + Dv)  # saved out/inv, gz, .grad
    if causal:
        C = min(64, N, int(math.sqrt(E / (BH * X))))
        P = BH * C * C * X
        back = BH * N * (2 * D + Dv) + 12 * BH * N + 4 * BH * m * (Dv + 1) + 2 * P + 16 * BH * C * X
        back += 6 * BH * N * X  # the feature pass over all keys (u, phi, shifts) at once
    else:
        T = min(E, BH * N * X)
        back = BH * N * (D + 2 * D + Dv) + 3 * BH * N + 4 * BH * m * (Dv + 1) + 16 * T
    return s * (autograd + back)


@pytest.mark.parametrize("causal", [False, True])
def test_kernelized_peak_memory_at_16k(causal):
    B, H, N, D = 1, 2, 16384, 32
    setup = f"""
g = torch.Generator().manual_seed(0)
q, k, v = (torch.randn({B}, {H}, {N}, {D}, generator=g).requires_grad_() for _ in range(3))
w = longattn.random_features({D}, {D}, seed=1)
"""
    call = f"""
out = longattn.kernelized_attention(q, k, v, feature_map="favor", projection=w, causal={causal}, path="reference")
out.backward(torch.ones_like(out))
"""
    peak = peak_extra_bytes(setup, call)
    bound = kernelized_formula(B, H, N, D, D, D, causal)
    assert peak <= bound + SLACK, (peak / 2**20, bound / 2**20)
    assert peak < B * H * N * N * 4 / 16  # an N x N float32 tensor per head would be 2 GiB


# O(N^2) time: the forward at N = 16384, forward + backward at 8192 (~6 s each on a loaded machine;
# both at 16384 take ~25 s). At either, a chunk is 1/8 of the budget, far below N x N.
@pytest.mark.parametrize("N,backward", [(16384, False), (8192, True)])
def test_rpe_peak_memory(N, backward):
    B, H, m = 1, 1, 2
    setup = f"""
g = torch.Generator().manual_seed(0)
fq, fk = (torch.rand({B}, {H}, {N}, {m}, generator=g).requires_grad_() for _ in range(2))
v = torch.randn({B}, {H}, {N}, {m}, generator=g).requires_grad_()
b = torch.linspace(-20, 20, 2 * {N} - 1)[None].requires_grad_()
"""
    call = "out = longattn.kernelized_rpe_attention(fq, fk, v, b, causal=True, path='reference')\n"
    if backward:
        call += "out.backward(torch.ones_like(out))\n"
    peak = peak_extra_bytes(setup, call)
    BH = B * H
    r = max(1, E // (8 * BH * N))
    T = BH * r * N
    P = min(E, BH * r * r * m)
    if backward:  # + autograd's saved out/den, the output's gradient, the accumulated .grad
        own = BH * N * (2 * m + m + 2) + H * (2 * N - 1) + BH * N * (m + m + 2) + 16 * T + 4 * BH * r * 2 * m + P
        own += BH * N * (m + 1) + BH * N * m + BH * N * 3 * m + H * (2 * N - 1)
    else:
        own = BH * N * (m + 1) + BH * N + BH * N * (m + m + 2) + 10 * T + 2 * BH * r * 2 * m + P
    bound = 4 * own
    assert peak <= bound + SLACK, (peak / 2**20, bound / 2**20)
    assert peak < BH * N * N * 4 / 2  # an N x N float32 matrix: 1 GiB at 16384, 256 MiB at 8192


# ------------------------------------------------------------------ dispatch
INTERNAL = ["_kernelized_attention_forward", "_kernelized_attention_backward", "_feature_map_forward",
            "_feature_map_backward", "_kernelized_rpe_forward", "_kernelized_rpe_backward"]


@pytest.mark.parametrize("name", INTERNAL)
def test_other_devices_reach_the_reference(name):
    # The CompositeExplicitAutograd registration (where it was made), then the computed table.
    where = re.search(r"^CompositeExplicitAutograd\[alias\]: registered at (\S+)",
                      torch._C._dispatch_dump(f"longattn::{name}"), re.M).group(1)
    lines = dict(re.findall(r"^(\S+): (.*)$", torch._C._dispatch_dump_table(f"longattn::{name}"), re.M))
    for device in ("CUDA", "XPU", "MPS"):
        assert lines[device] == f"registered at {where} [default backend kernel]", (device, lines[device])
    assert lines["CPU"] != lines["CUDA"] and lines["Meta"] != lines["CUDA"]


def test_meta_tensors_reach_the_meta_kernels():
    q = torch.empty(2, 3, 1000, 16, device="meta")
    w = torch.empty(8, 16, device="meta")
    out = longattn.kernelized_attention(q, q, q[..., :5], feature_map="favor", projection=w, causal=True)
    assert out.shape == (2, 3, 1000, 5) and out.device.type == "meta"
    b = torch.empty(3, 1999, device="meta")
    out = longattn.kernelized_rpe_attention(q, q, q[..., :5], b)
    assert out.shape == (2, 3, 1000, 5) and out.device.type == "meta"
    phi, shift = longattn.feature_map(q, feature_map="sikf")
    assert phi.shape == q.shape and shift.shape == (2, 3, 1000)
