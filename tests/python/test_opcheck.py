"""The PyTorch operator contract for every torch.ops.longattn operator, public and internal:
torch.library.opcheck with its default checks (schema, autograd registration, fake tensor,
AOT dispatch with static and dynamic shapes) on representative inputs (masks, rel_bias, causal),
the fake (Meta) kernels' shapes against the real outputs, and the vmap error."""
import pytest
import torch

import longattn

ops = torch.ops.longattn


def _registered():
    """Every operator registered in the longattn namespace (public and internal)."""
    names = {n.split("::", 1)[1] for n in torch._C._dispatch_get_all_op_names() if n.startswith("longattn::")}
    return sorted(names)


def _t(*shape, grad=True, dtype=torch.float32, positive=False):
    x = torch.randn(*shape, dtype=dtype)
    if positive:
        x = x.abs() + 0.1
    return x.requires_grad_(grad)


def _mask(B, N):
    m = torch.rand(B, N) > 0.3
    m[:, 0] = True
    return m


B, H, N, D = 2, 2, 6, 4


def public_cases():
    """(name, args, kwargs) for the public operators."""
    q, k, v = _t(B, H, N, D), _t(B, H, N, D), _t(B, H, N, D)
    m = _mask(B, N)
    bias = _t(H, 2 * N - 1)
    w = longattn.random_features(8, D, seed=3, heads=H)
    phi = (_t(B, H, N, 5, positive=True), _t(B, H, N, 5, positive=True))
    sq, sk, sv, part = _t(B, N, D), _t(B, N, D), _t(B, 3, N, 2), _t(3, 2 * N - 1, positive=True)
    x = _t(B, H, N, 3)
    return [
        ("softmax_attention", (q, k, v), {}),
        ("softmax_attention", (q, k, v), dict(causal=True, key_padding_mask=m, rel_bias=bias)),
        ("softmax_attention", (q, k[:, :, :4], v[:, :, :4]), dict(key_padding_mask=m[:, :4], scale=0.3)),
        ("kernelized_attention", (q, k, v), dict(feature_map="elu", key_padding_mask=m)),
        ("kernelized_attention", (q, k, v), dict(feature_map="sikf", causal=True)),
        ("kernelized_attention", (q, k, v), dict(feature_map="favor", projection=w, key_padding_mask=m)),
        ("kernelized_attention", (q, k, v), dict(feature_map="relu", rel_bias=bias, causal=True)),
        ("feature_map", (q,), dict(feature_map="favor", projection=w, key_padding_mask=m)),
        ("feature_map", (q,), dict(feature_map="elu")),
        ("kernelized_rpe_attention", (*phi, v, bias), dict(key_padding_mask=m, eps=1e-6)),
        ("kernelized_rpe_attention", (*phi, v, bias), dict(causal=True)),
        ("toeplitz_matmul", (_t(H, 2 * N - 1), x), dict(causal=True, path="fft")),
        ("toeplitz_matmul", (_t(H, 2 * N - 1), x), dict(path="direct")),
        ("toeplitz_matmul_2d", (_t(H, 3), _t(H, 5), x), dict(height=2, width=3)),
        ("shatter_attention", (sq, sk, sv, part), dict(key_padding_mask=m)),
        ("shatter_attention", (sq, sk, sv, part), dict(activation="sigmoid", causal=True)),
        ("yoso_attention", (q, k, v), dict(hash_bits=3, num_hashes=4, seed=5, key_padding_mask=m)),
        ("yoso_attention", (q, k, v), dict(hash_bits=3, num_hashes=4, seed=5, hashing="hadamard",
                                           backward="exact")),
        ("yoso_expectation", (q, k, v), dict(hash_bits=3, key_padding_mask=m)),
        ("yoso_expectation", (q, k, v), dict(hash_bits=3, backward="surrogate")),
        ("dropout", (_t(B, N, D), 0.25, 7), {}),
        ("random_features", (8, D), dict(seed=1, heads=H)),
        ("random_features", (6, D), dict(seed=2, orthogonal=False, scaling="sqrt_d", dtype=torch.float64)),
    ]


def internal_cases():
    """(name, args, kwargs) for the internal operators, with inputs as the public ones pass them
    (checked, contiguous; no requires_grad: they have no autograd kernel of their own)."""
    q, k, v = (_t(B, H, N, D, grad=False) for _ in range(3))
    g = _t(B, H, N, D, grad=False)
    m = _mask(B, N)
    bias = _t(H, 2 * N - 1, grad=False)
    out, lse = ops._softmax_attention_forward(q, k, v, m, bias, True, 0.5)
    w = longattn.random_features(8, D, seed=3, heads=H)
    favor = 3  # kernels::FeatureMap::favor
    kout, inv = ops._kernelized_attention_forward(q, k, v, m, w, favor, False, 1e-6)
    fq, fk = (_t(B, H, N, 5, grad=False, positive=True) for _ in range(2))
    rb = _t(H, 2 * N - 1, grad=False)
    kls, els = _t(B, H, N, grad=False), _t(B, H, N, grad=False)
    rout, den, direct = ops._kernelized_rpe_forward(fq, fk, v, rb, kls, els, m, True, 1e-6)
    x, c = _t(B, H, N, 3, grad=False), _t(H, 2 * N - 1, grad=False)
    row, col = _t(H, 3, grad=False), _t(H, 5, grad=False)
    sq, sk, sv = _t(B, N, D, grad=False), _t(B, N, D, grad=False), _t(B, 3, N, 2, grad=False)
    part = _t(3, 2 * N - 1, grad=False, positive=True)
    sout, slse = ops._shatter_attention_forward(sq, sk, sv, part, m, 0, True, 0.5)
    qc, kc = ops._yoso_hash(q, k, m, 3, 4, 5, 1)
    phi, shift, argmax = ops._feature_map_forward(q, "favor", w, m)
    gphi, gshift = _t(*phi.shape, grad=False), _t(*shift.shape, grad=False)
    return [
        ("_softmax_attention_forward", (q, k, v, m, bias, True, 0.5), {}),
        ("_softmax_attention_backward", (g, q, k, v, out, lse, m, bias, True, 0.5), {}),
        ("_softmax_attention_backward", (g, q, k, v, out, lse, None, None, True, 0.5), {}),
        ("_kernelized_attention_forward", (q, k, v, m, w, favor, False, 1e-6), {}),
        ("_kernelized_attention_backward", (g, q, k, v, kout, inv, m, w, favor, False, 1e-6), {}),
        ("_kernelized_attention_forward", (q, k, v, None, None, 0, True, 1e-6), {}),
        ("_kernelized_rpe_forward", (fq, fk, v, rb, kls, els, m, True, 1e-6), {}),
        ("_kernelized_rpe_forward", (fq, fk, v, rb, None, None, None, False, 0.0), {}),
        ("_kernelized_rpe_backward",
         (g, fq, fk, v, rb, kls, els, rout, den, direct, m, True, 1e-6), {}),
        ("_toeplitz_matmul_forward", (c, x, True, 2), {}),
        ("_toeplitz_matmul_backward", (x, c, x, False, 1, True, True), {}),
        ("_toeplitz_matmul_2d_forward", (row, col, x, 2, 3, 0), {}),
        ("_toeplitz_matmul_2d_backward", (x, row, col, x, 2, 3, 0), {}),
        ("_shatter_attention_forward", (sq, sk, sv, part, m, 0, True, 0.5), {}),
        ("_shatter_attention_backward",
         (_t(B, N, 2, grad=False), sq, sk, sv, part, sout, slse, m, 0, True, 0.5), {}),
        ("_yoso_hash", (q, k, m, 3, 4, 5, 1), {}),
        ("_yoso_forward", (q, k, v, qc, kc, 3), {}),
        ("_yoso_backward_lsh", (g, q, k, v, qc, kc, 3), {}),
        ("_yoso_expectation_forward", (q, k, v, m, 3), {}),
        ("_yoso_expectation_backward", (g, q, k, v, m, 3, 0), {}),
        ("_feature_map_forward", (q, "favor", w, m), {}),
        ("_feature_map_forward", (q, "elu", None, None), {}),
        ("_feature_map_backward", (gphi, gshift, q, phi, argmax, "favor", w, m), {}),
        ("_dropout_apply", (_t(B, N, D, grad=False), 0.25, 7), {}),
    ]


# Operators opcheck cannot take, and why.
NOT_OPCHECKED = {
    "_build_info": "takes and returns no tensor (build information for `longattn info`)",
}


def _cases():
    torch.manual_seed(0)
    return public_cases() + internal_cases()


def test_every_operator_has_a_case():
    covered = {name for name, _, _ in _cases()} | set(NOT_OPCHECKED)
    assert covered == set(_registered())


@pytest.mark.parametrize("i", range(len(_cases())), ids=[f"{c[0]}-{i}" for i, c in enumerate(_cases())])
def test_opcheck(i):
    torch.manual_seed(0)
    name, args, kwargs = _cases()[i]
    torch.library.opcheck(getattr(ops, name).default, args, kwargs)


@pytest.mark.parametrize("name", [n for n, _, _ in internal_cases()])
def test_meta_kernel_matches_real_outputs(name):
    """The fake kernel states the shapes, dtypes and devices the CPU kernel produces."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    torch.manual_seed(0)
    args, kwargs = next((a, k) for n, a, k in internal_cases() if n == name)
    real = getattr(ops, name)(*args, **kwargs)
    mode = FakeTensorMode()
    fake_args = [mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args]
    with mode:
        fake = getattr(ops, name)(*fake_args, **kwargs)
    real = real if isinstance(real, tuple) else (real,)
    fake = fake if isinstance(fake, tuple) else (fake,)
    assert len(real) == len(fake)
    for r, f in zip(real, fake):
        assert (r.shape, r.dtype, r.device) == (f.shape, f.dtype, f.device)


def test_meta_tensors_give_shapes_without_computing():
    q = torch.empty(2, 3, 1000, 16, device="meta")
    out = longattn.softmax_attention(q, q, q[..., :8], causal=True)
    assert out.shape == (2, 3, 1000, 8) and out.device.type == "meta"


def test_vmap_says_it_is_not_supported():
    q = torch.randn(3, 2, 5, 4)
    with pytest.raises(RuntimeError, match="vmap"):
        torch.func.vmap(lambda x: longattn.softmax_attention(x, x, x))(q.unsqueeze(0).expand(2, -1, -1, -1, -1))


# --- softmax_attention and shatter_attention on the reference path (issue 17) ---------------
# path="reference" on CPU: the autograd Function runs the ATen-only reference functions (with
# concrete sizes; symbolic ones go through the internal operators' Meta kernels).
def softmax_reference_cases():
    q, k, v = _t(B, H, N, D), _t(B, H, N, D), _t(B, H, N, D)
    m = _mask(B, N)
    bias = _t(H, 2 * N - 1)
    sq, sk, sv, part = _t(B, N, D), _t(B, N, D), _t(B, 3, N, 2), _t(3, 2 * N - 1, positive=True)
    return [
        ("softmax_attention", (q, k, v), dict(path="reference")),
        ("softmax_attention", (q, k, v), dict(causal=True, key_padding_mask=m, rel_bias=bias, path="reference")),
        ("softmax_attention", (q, k[:, :, :4], v[:, :, :4]), dict(key_padding_mask=m[:, :4], path="reference")),
        ("shatter_attention", (sq, sk, sv, part), dict(key_padding_mask=m, path="reference")),
        ("shatter_attention", (sq, sk, sv, part), dict(activation="sigmoid", causal=True, path="reference")),
    ]


@pytest.mark.parametrize("i", range(len(softmax_reference_cases())))
def test_opcheck_softmax_reference_path(i):
    torch.manual_seed(0)
    name, args, kwargs = softmax_reference_cases()[i]
    torch.library.opcheck(getattr(ops, name).default, args, kwargs)


# ---- kernelized_attention, feature_map, kernelized_rpe_attention: the reference path (issue #17)
def _kernelized_reference_cases():
    torch.manual_seed(0)
    q, k, v = _t(B, H, N, D), _t(B, H, N, D), _t(B, H, N, D)
    m = _mask(B, N)
    bias = _t(H, 2 * N - 1)
    w = longattn.random_features(8, D, seed=3, heads=H)
    phi = (_t(B, H, N, 5, positive=True), _t(B, H, N, 5, positive=True))
    ref = dict(path="reference")
    return [
        ("kernelized_attention", (q, k, v), dict(feature_map="elu", key_padding_mask=m, **ref)),
        ("kernelized_attention", (q, k, v), dict(feature_map="sikf", causal=True, **ref)),
        ("kernelized_attention", (q, k, v), dict(feature_map="favor", projection=w, key_padding_mask=m, **ref)),
        ("kernelized_attention", (q, k, v), dict(feature_map="relu", rel_bias=bias, causal=True, **ref)),
        ("feature_map", (q,), dict(feature_map="favor", projection=w, key_padding_mask=m, **ref)),
        ("kernelized_rpe_attention", (*phi, v, bias), dict(key_padding_mask=m, eps=1e-6, **ref)),
        ("kernelized_rpe_attention", (*phi, v, bias), dict(causal=True, **ref)),
    ]


@pytest.mark.parametrize("i", range(7))
def test_opcheck_kernelized_reference(i):
    name, args, kwargs = _kernelized_reference_cases()[i]
    torch.library.opcheck(getattr(ops, name).default, args, kwargs)


# ---- toeplitz, yoso, dropout: the reference path (#17) -------------------------------------
def _reference_cases_toeplitz_yoso_dropout():
    torch.manual_seed(1)
    x = _t(B, H, N, 3)
    q, k, v = _t(B, H, N, D), _t(B, H, N, D), _t(B, H, N, 3)
    m = _mask(B, N)
    return [
        ("toeplitz_matmul", (_t(H, 2 * N - 1), x), dict(causal=True, path="reference")),
        ("toeplitz_matmul_2d", (_t(H, 3), _t(H, 5), x), dict(height=2, width=3, path="reference")),
        ("yoso_attention", (q, k, v), dict(hash_bits=3, num_hashes=4, seed=5, key_padding_mask=m, path="reference")),
        ("yoso_attention", (q, k, v), dict(hash_bits=3, num_hashes=4, seed=5, hashing="hadamard",
                                           backward="exact", path="reference")),
        ("yoso_expectation", (q, k, v), dict(hash_bits=3, key_padding_mask=m, path="reference")),
        ("dropout", (_t(B, N, D), 0.25, 7), dict(path="reference")),
    ]


@pytest.mark.parametrize("i", range(len(_reference_cases_toeplitz_yoso_dropout())))
def test_opcheck_reference_toeplitz_yoso_dropout(i):
    name, args, kwargs = _reference_cases_toeplitz_yoso_dropout()[i]
    torch.library.opcheck(getattr(ops, name).default, args, kwargs)
