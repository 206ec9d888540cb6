"""longattn.shatter_attention and longattn.nn.Shatter: values against a dense reference, fp64
finite-difference gradients for every input, bad inputs, empty tensors, and the layer's partition
of unity."""
import math

import pytest
import torch

import longattn
from longattn.nn.shatter import Shatter, ShatterPartition


def reference(q, k, v, partition, activation="softmax", causal=False, key_padding_mask=None, scale=None):
    """Dense: the [B, N, N] weights, then sum_p (A * Pi_p) V_p."""
    B, N, D = q.shape
    scale = (1 / math.sqrt(D) if D > 0 else 1.0) if scale is None else scale
    s = scale * q @ k.transpose(1, 2)
    allowed = torch.ones(B, N, N, dtype=torch.bool)
    if causal:
        allowed &= torch.ones(N, N, dtype=torch.bool).tril()
    if key_padding_mask is not None:
        allowed &= key_padding_mask[:, None, :]
    if activation == "softmax":
        a = torch.softmax(s.masked_fill(~allowed, -math.inf), -1).nan_to_num(0.0)
    else:
        a = torch.sigmoid(s) * allowed
    i = torch.arange(N)
    pi = partition[:, (i[None, :] - i[:, None]) + N - 1]  # [P, N, N], offset j - i
    return torch.einsum("bij,pij,bpjd->bid", a, pi, v)


def make(B=2, N=9, D=4, Dv=3, P=3, dtype=torch.float64, masked=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, N, D, generator=g, dtype=dtype)
    k = torch.randn(B, N, D, generator=g, dtype=dtype)
    v = torch.randn(B, P, N, Dv, generator=g, dtype=dtype)
    part = torch.rand(P, 2 * N - 1, generator=g, dtype=dtype)
    mask = None
    if masked:
        mask = torch.rand(B, N, generator=g) > 0.3
        mask[0] = False  # a batch with every key masked
    return q, k, v, part, mask


@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_reference(activation, causal, masked, dtype):
    q, k, v, part, mask = make(B=3, N=150, D=16, Dv=8, P=4, dtype=dtype, masked=masked)
    got = longattn.shatter_attention(q, k, v, part, activation=activation, causal=causal, key_padding_mask=mask)
    want = reference(q.double(), k.double(), v.double(), part.double(), activation, causal, mask)
    # float: sums of <= N*P*Dv products rounded at 6e-8 (see the kernel tests for the bound).
    tol = 1e-10 if dtype == torch.float64 else 2e-4
    torch.testing.assert_close(got.double(), want, atol=tol * (want.abs().max().item() + 1), rtol=0)
    if masked:
        assert torch.all(got[0] == 0)


@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
@pytest.mark.parametrize("causal,masked", [(False, False), (True, False), (False, True), (True, True)])
def test_gradcheck(activation, causal, masked):
    q, k, v, part, mask = make(masked=masked)
    inputs = [t.requires_grad_() for t in (q, k, v, part)]

    def f(q, k, v, part):
        return longattn.shatter_attention(q, k, v, part, activation=activation, causal=causal,
                                          key_padding_mask=mask, scale=0.7)

    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-7, rtol=1e-5)


def test_strided_inputs_and_scale():
    # q, k slices of one projection, v a transposed view: no copies needed, same result.
    B, N, D, Dv, P = 2, 40, 6, 5, 3
    qk = torch.randn(B, N, 2 * D, dtype=torch.float64)
    vv = torch.randn(B, N, P, Dv, dtype=torch.float64)
    part = torch.rand(P, 2 * N - 1, dtype=torch.float64)
    q, k, v = qk[..., :D], qk[..., D:], vv.transpose(1, 2)
    got = longattn.shatter_attention(q, k, v, part, scale=0.3)
    torch.testing.assert_close(got, reference(q, k, v, part, scale=0.3), atol=1e-12, rtol=0)


@pytest.mark.parametrize("causal", [False, True])
def test_one_part_of_ones_is_softmax_attention(causal):
    q, k, v, _, mask = make(B=2, N=70, D=8, Dv=5, P=1, masked=True)
    ones = torch.ones(1, 2 * 70 - 1, dtype=torch.float64)
    got = longattn.shatter_attention(q, k, v, ones, causal=causal, key_padding_mask=mask)
    want = longattn.softmax_attention(q[:, None], k[:, None], v, causal=causal, key_padding_mask=mask)[:, 0]
    torch.testing.assert_close(got, want, atol=1e-12, rtol=0)


def test_causal_does_not_leak():
    q, k, v, part, _ = make(B=2, N=50, D=4, Dv=3, P=3)
    before = longattn.shatter_attention(q, k, v, part, causal=True)
    k2, v2 = k.clone(), v.clone()
    k2[:, 30:] += 5
    v2[:, :, 30:] *= -3
    after = longattn.shatter_attention(q, k2, v2, part, causal=True)
    assert torch.equal(before[:, :30], after[:, :30])


def test_empty_tensors():
    f64 = torch.float64
    for B, N, D, Dv, P in [(0, 5, 4, 3, 2), (2, 0, 4, 3, 2), (2, 5, 4, 0, 2), (2, 5, 4, 3, 0), (2, 5, 0, 3, 2)]:
        q = torch.randn(B, N, D, dtype=f64, requires_grad=True)
        k = torch.randn(B, N, D, dtype=f64, requires_grad=True)
        v = torch.randn(B, P, N, Dv, dtype=f64, requires_grad=True)
        part = torch.rand(P, max(2 * N - 1, 0), dtype=f64, requires_grad=True)
        out = longattn.shatter_attention(q, k, v, part)
        assert out.shape == (B, N, Dv)
        if out.numel():
            torch.testing.assert_close(out, reference(q, k, v, part))
        out.sum().backward()
        for t in (q, k, v, part):
            assert t.grad is None or t.grad.shape == t.shape


def bad(match, *args, **kwargs):
    with pytest.raises(RuntimeError, match=match):
        longattn.shatter_attention(*args, **kwargs)


def test_bad_inputs_name_expected_and_given():
    q, k, v, part, _ = make(B=2, N=9, D=4, Dv=3, P=3)
    bad(r"shatter_attention: q must have 3 dimensions.*\[B, N, D\].*got", q[None], k, v, part)
    bad(r"shatter_attention: k must have shape \[B, N, D\] = \[2, 9, 4\], got \[2, 9, 5\]",
        q, torch.randn(2, 9, 5, dtype=q.dtype), v, part)
    bad(r"shatter_attention: v must have shape \[B, P, N, Dv\] = \[2, \*, 9, \*\], got \[2, 3, 8, 3\]",
        q, k, v[:, :, :8], part)
    bad(r"shatter_attention: partition must have shape \[P, 2N-1\] = \[3, 17\], got \[2, 17\]", q, k, v, part[:2])
    bad(r"shatter_attention: partition must have shape \[P, 2N-1\] = \[3, 17\], got \[3, 16\]", q, k, v, part[:, 1:])
    bad(r"shatter_attention: partition must have the dtype of q \(Double\), got Float", q, k, v, part.float())
    bad(r"shatter_attention:.*q.*float32, float64, bfloat16 or float16.*Long", q.long(), k.long(), v.long(), part.long())
    bad(r"shatter_attention: activation must be 'softmax' or 'sigmoid', got 'relu'", q, k, v, part, activation="relu")
    bad(r"shatter_attention:.*key_padding_mask.*\[2, 9\]", q, k, v, part, key_padding_mask=torch.ones(2, 8, dtype=torch.bool))


# ---- the layer ----

@pytest.mark.parametrize("P", [1, 2, 4, 7])
@pytest.mark.parametrize("degree", [1, 2, 3])
def test_learnable_partition_is_a_partition_of_unity_for_any_parameters(P, degree):
    part = ShatterPartition(P, "softmax", degree=degree).double()
    g = torch.Generator().manual_seed(P * 10 + degree)
    for scale in [0.0, 1.0, 30.0]:  # including large weights that saturate the softmax
        with torch.no_grad():
            part.weight.copy_(scale * torch.randn(part.weight.shape, generator=g, dtype=torch.float64))
        for n in [1, 2, 17, 600]:
            pi = part(n)
            assert pi.shape == (P, 2 * n - 1)
            assert torch.all(pi >= 0) and torch.isfinite(pi).all()
            torch.testing.assert_close(pi.sum(0), torch.ones(2 * n - 1, dtype=torch.float64), atol=1e-12, rtol=0)


@pytest.mark.parametrize("P", [1, 3, 4, 6])
def test_bernstein_partition_is_a_partition_of_unity(P):
    for max_distance in [4, 512]:
        pi = ShatterPartition(P, "bernstein", max_distance=max_distance)(300).double()
        assert torch.all(pi >= 0)
        torch.testing.assert_close(pi.sum(0), torch.ones(599, dtype=torch.float64), atol=1e-6, rtol=0)


def test_initial_partition_orders_parts_from_left_to_right():
    pi = ShatterPartition(4, "softmax")(200)  # offsets -199 .. 199
    first_peak = [int(pi[p].argmax()) - 199 for p in range(4)]
    assert first_peak == sorted(first_peak) and first_peak[0] < 0 < first_peak[-1]


@pytest.mark.parametrize("key_projection", [True, False])
@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
def test_layer_runs_and_trains_every_parameter(key_projection, activation):
    torch.manual_seed(0)
    layer = Shatter(32, 4, qk_dim=8, key_projection=key_projection, activation=activation)
    x = torch.randn(3, 20, 32)
    mask = torch.ones(3, 20, dtype=torch.bool)
    mask[1, 15:] = False
    y = layer(x, key_padding_mask=mask)
    assert y.shape == x.shape and torch.isfinite(y).all()
    y.square().mean().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and torch.any(p.grad != 0), name
    assert (layer.k_proj is None) == (not key_projection)


def test_layer_gradcheck_double():
    torch.manual_seed(1)
    layer = Shatter(6, 3, qk_dim=4, causal=True, dtype=torch.float64)
    x = torch.randn(2, 7, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: layer(x), (x,), eps=1e-6, atol=1e-7)
    # and through the partition's parameters
    w = layer.partition.weight
    assert torch.autograd.gradcheck(
        lambda w_: torch.func.functional_call(layer, {"partition.weight": w_}, (x.detach(),)), (w.detach().clone().requires_grad_(),),
        eps=1e-6, atol=1e-7)


def test_layer_matches_a_composite_of_its_parts():
    torch.manual_seed(2)
    layer = Shatter(16, 4, qk_dim=8, partition="bernstein", dtype=torch.float64)
    x = torch.randn(2, 30, 16, dtype=torch.float64)
    q, k = layer.q_proj(x), layer.k_proj(x)
    v = layer.v_proj(x).view(2, 30, 4, 4).transpose(1, 2)
    want = layer.out_proj(reference(q, k, v, layer.partition(30).double()))
    torch.testing.assert_close(layer(x), want, atol=1e-12, rtol=0)
