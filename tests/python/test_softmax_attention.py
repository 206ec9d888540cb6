"""The softmax_attention operator through torch: reference agreement, fp64 gradients, errors."""
import itertools
import math

import pytest
import torch

import longattn


def reference(q, k, v, causal=False, mask=None, bias=None, scale=None):
    """Dense attention in float64, written for clarity."""
    q, k, v = q.double(), k.double(), v.double()
    N_q, N_k, D = q.shape[2], k.shape[2], q.shape[3]
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    s = scale * q @ k.transpose(-1, -2)
    if bias is not None:
        i = torch.arange(N_q)[:, None]
        j = torch.arange(N_k)[None, :]
        s = s + bias.double()[:, (j - i + N_k - 1)].unsqueeze(0)
    allowed = torch.ones(q.shape[0], 1, N_q, N_k, dtype=torch.bool)
    if mask is not None:
        allowed = allowed & mask[:, None, None, :]
    if causal:
        allowed = allowed & torch.ones(N_q, N_k, dtype=torch.bool).tril()
    s = s.masked_fill(~allowed, -math.inf)
    p = torch.softmax(s, dim=-1).nan_to_num(0.0)  # rows with no key: zeros
    return p @ v


@pytest.mark.parametrize("causal,use_mask,use_bias", list(itertools.product([False, True], repeat=3)))
def test_gradcheck_fp64(causal, use_mask, use_bias):
    B, H, N, D, Dv = 2, 3, 13, 5, 4
    q = torch.randn(B, H, N, D, dtype=torch.float64, requires_grad=True)
    k = torch.randn(B, H, N, D, dtype=torch.float64, requires_grad=True)
    v = torch.randn(B, H, N, Dv, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(H, 2 * N - 1, dtype=torch.float64, requires_grad=True) if use_bias else None
    mask = None
    if use_mask:
        mask = torch.rand(B, N) > 0.4
        mask[1] = False  # a batch with no key at all: zero output, zero gradient
        mask[1, N - 1] = True if causal else False  # causal: only the last query sees a key

    def f(q, k, v, *b):
        return longattn.softmax_attention(q, k, v, causal=causal, key_padding_mask=mask,
                                          rel_bias=b[0] if b else None)

    inputs = (q, k, v) + ((bias,) if use_bias else ())
    assert torch.autograd.gradcheck(f, inputs)
    out = f(*inputs)
    torch.testing.assert_close(out, reference(q, k, v, causal, mask, bias), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_non_contiguous_and_cross_attention(dtype):
    B, H, Nq, Nk, D = 2, 3, 7, 11, 6
    # [B, N, H, D] buffers viewed as [B, H, N, D], and v with a transposed last dimension.
    q = torch.randn(B, Nq, H, D, dtype=dtype).transpose(1, 2)
    k = torch.randn(B, Nk, H, D, dtype=dtype).transpose(1, 2)
    v = torch.randn(B, H, 5, Nk, dtype=dtype).transpose(-1, -2)
    assert not q.is_contiguous() and v.stride(-1) != 1
    out = longattn.softmax_attention(q, k, v, scale=0.3)
    tol = dict(rtol=2e-5, atol=2e-6) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(out.double(), reference(q, k, v, scale=0.3), **tol)


def test_fully_masked_rows_give_zeros_not_nan():
    q = torch.randn(1, 2, 4, 3, requires_grad=True)
    k = torch.randn(1, 2, 4, 3, requires_grad=True)
    v = torch.randn(1, 2, 4, 3, requires_grad=True)
    mask = torch.zeros(1, 4, dtype=torch.bool)
    out = longattn.softmax_attention(q, k, v, key_padding_mask=mask)
    assert torch.equal(out, torch.zeros_like(out))
    out.sum().backward()
    for t in (q, k, v):
        assert torch.equal(t.grad, torch.zeros_like(t))


@pytest.mark.parametrize("shape_q,shape_k", [((0, 2, 5, 4), (0, 2, 5, 4)), ((1, 2, 0, 4), (1, 2, 0, 4)),
                                             ((1, 2, 3, 4), (1, 2, 0, 4))])
def test_empty_inputs(shape_q, shape_k):
    q = torch.randn(*shape_q, requires_grad=True)
    k = torch.randn(*shape_k, requires_grad=True)
    v = torch.randn(*shape_k[:3], 6, requires_grad=True)
    out = longattn.softmax_attention(q, k, v)
    assert out.shape == (shape_q[0], shape_q[1], shape_q[2], 6)
    assert torch.all(out == 0)
    out.sum().backward()
    assert q.grad.shape == q.shape and k.grad.shape == k.shape


def _qkv(B=2, H=3, N=5, D=4, dtype=torch.float32):
    return (torch.randn(B, H, N, D, dtype=dtype), torch.randn(B, H, N, D, dtype=dtype),
            torch.randn(B, H, N, D, dtype=dtype))


BAD_INPUTS = [
    # (description, kwargs override, expected message fragment)
    ("q rank", lambda q, k, v: dict(q=q[0]), "q must have 4 dimensions [B, H, Nq, D], got 3"),
    ("k rank", lambda q, k, v: dict(k=k[0]), "k must have 4 dimensions [B, H, Nk, D], got 3"),
    ("v rank", lambda q, k, v: dict(v=v[..., 0]), "v must have 4 dimensions [B, H, Nk, Dv], got 3"),
    ("batch mismatch", lambda q, k, v: dict(k=k[:1]), "k must have shape [B, H, Nk, D] = [2, 3, *, 4], got [1, 3, 5, 4]"),
    ("heads mismatch", lambda q, k, v: dict(k=k[:, :2]), "got [2, 2, 5, 4]"),
    ("head dim mismatch", lambda q, k, v: dict(k=k[..., :3]), "= [2, 3, *, 4], got [2, 3, 5, 3]"),
    ("v length mismatch", lambda q, k, v: dict(v=v[:, :, :4]), "v must have shape [B, H, Nk, Dv] = [2, 3, 5, *], got [2, 3, 4, 4]"),
    ("rel_bias length", lambda q, k, v: dict(rel_bias=torch.zeros(3, 8)), "rel_bias must have shape [H, 2N-1] = [3, 9], got [3, 8]"),
    ("rel_bias heads", lambda q, k, v: dict(rel_bias=torch.zeros(2, 9)), "= [3, 9], got [2, 9]"),
    ("mask shape", lambda q, k, v: dict(key_padding_mask=torch.ones(2, 4, dtype=torch.bool)), "key_padding_mask must have shape [B, Nk] = [2, 5], got [2, 4]"),
    ("mask dtype", lambda q, k, v: dict(key_padding_mask=torch.ones(2, 5)), "key_padding_mask must be bool [B, Nk]"),
    ("dtype", lambda q, k, v: dict(q=q.long(), k=k.long(), v=v.long()), "q must be float32, float64, bfloat16 or float16, got Long"),
    ("mixed dtype", lambda q, k, v: dict(v=v.double()), "v must have the dtype of q (Float), got Double"),
    ("int dtype", lambda q, k, v: dict(q=q.int(), k=k.int(), v=v.int()), "q must be float32, float64, bfloat16 or float16, got Int"),
    ("causal cross", lambda q, k, v: dict(k=k[:, :, :3], v=v[:, :, :3], causal=True), "causal=True needs Nq == Nk, got Nq = 5 and Nk = 3"),
    ("bias cross", lambda q, k, v: dict(k=k[:, :, :3], v=v[:, :, :3], rel_bias=torch.zeros(3, 9)), "rel_bias needs Nq == Nk, got Nq = 5 and Nk = 3"),
]


@pytest.mark.parametrize("desc,override,message", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_messages(desc, override, message):
    q, k, v = _qkv()
    args = dict(q=q, k=k, v=v)
    args.update(override(q, k, v))
    kwargs = {n: args.pop(n) for n in list(args) if n not in ("q", "k", "v")}
    with pytest.raises(RuntimeError) as e:
        longattn.softmax_attention(args["q"], args["k"], args["v"], **kwargs)
    assert "longattn.softmax_attention" in str(e.value)
    assert message in str(e.value)


def test_cpp_and_python_call_the_same_operator():
    q, k, v = _qkv()
    a = longattn.softmax_attention(q, k, v, causal=True)
    b = torch.ops.longattn.softmax_attention(q, k, v, causal=True)
    assert torch.equal(a, b)
