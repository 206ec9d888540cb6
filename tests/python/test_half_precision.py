"""bfloat16 and float16: every operator takes them, returns them, and is as accurate as the rule
asks (FlashAttention's): the error of our low-precision output (and gradients) against the float64
formula is at most 2x the error of the same formula written with torch operations in that low
precision, on the same (rounded) inputs. Also: what autograd saves is in the half dtype, YOSO's
codes and dropout's mask are the bits of float32, and the modules run under torch.autocast."""
import math

import pytest
import torch

import longattn

HALF = [torch.bfloat16, torch.float16]
B, H, N, D, DV = 2, 2, 37, 8, 5


def _gather(b, n):
    i = torch.arange(n)
    return b[:, (i[None, :] - i[:, None]) + n - 1]  # [H, N, N]: b at offset j - i


def _allowed(batch, n, mask, causal):
    a = torch.ones(batch, 1, n, n, dtype=torch.bool)
    if mask is not None:
        a = a & mask[:, None, None, :]
    if causal:
        a = a & torch.ones(n, n, dtype=torch.bool).tril()
    return a


# References a user would write with torch operations, in whatever dtype their inputs have.
def softmax_ref(q, k, v, bias=None, mask=None, causal=False):
    s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if bias is not None:
        s = s + _gather(bias.to(s.dtype), q.shape[2])
    s = s.masked_fill(~_allowed(q.shape[0], q.shape[2], mask, causal), -math.inf)
    return torch.softmax(s, -1).nan_to_num(0.0) @ v


def weighted_ref(fq, fk, v, bias=None, mask=None, causal=False):
    """sum_j w_ij v_j / sum_j w_ij with w_ij = e^{b[j-i]} phi_i.phi_j over the keys taking part."""
    w = fq @ fk.transpose(-1, -2)
    if bias is not None:
        w = w * _gather(bias.to(w.dtype), fq.shape[2]).exp()
    w = w.masked_fill(~_allowed(fq.shape[0], fq.shape[2], mask, causal), 0.0)
    return (w @ v) / w.sum(-1, keepdim=True)


def elu1(x):
    return torch.nn.functional.elu(x) + 1


def favor_features(x, omega):
    u = x @ omega.to(x.dtype).transpose(-1, -2) - 0.5 * (x * x).sum(-1, keepdim=True)
    return torch.exp(u - u.amax(dim=(-1, -2), keepdim=True))  # a per-head shift: cancels


def shatter_ref(q, k, v, part, mask=None, causal=False):
    s = q @ k.transpose(1, 2) / math.sqrt(q.shape[-1])
    a = torch.softmax(s.masked_fill(~_allowed(q.shape[0], q.shape[1], mask, causal)[:, 0], -math.inf), -1)
    pi = _gather(part.to(a.dtype), q.shape[1])
    return torch.einsum("bij,pij,bpjd->bid", a.nan_to_num(0.0), pi, v)


def yoso_e_ref(q, k, v, tau, mask=None):
    """A masked token takes part in nothing: not as a key, and its own row is zero."""
    qn = q / q.norm(dim=-1, keepdim=True)
    kn = k / k.norm(dim=-1, keepdim=True)
    c = (qn @ kn.transpose(-1, -2)).clamp(-1, 1)
    w = (1 - torch.arccos(c) / math.pi) ** tau
    if mask is not None:
        w = w * (mask[:, None, :, None] & mask[:, None, None, :]).to(w.dtype)
    return w @ v


def toeplitz_ref(c, x, causal=False):
    t = _gather(c.to(x.dtype), x.shape[2])
    if causal:
        t = t * torch.ones(x.shape[2], x.shape[2], dtype=x.dtype).tril()
    return t @ x


def toeplitz2d_ref(row, col, x, height, width):
    a = torch.arange(height).repeat_interleave(width)
    b = torch.arange(width).repeat(height)
    t = row[:, (a[None, :] - a[:, None]) + height - 1] + col[:, (b[None, :] - b[:, None]) + width - 1]
    return t.to(x.dtype) @ x


def _mask(seed=1):
    g = torch.Generator().manual_seed(seed)
    m = torch.rand(B, N, generator=g) > 0.3
    m[:, 0] = True
    return m


def cases():
    """(id, inputs, ours, ref, which inputs are parameters kept float32). Inputs are float32."""
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    q, k, v = r(B, H, N, D), r(B, H, N, D), r(B, H, N, DV)
    bias = 0.5 * r(H, 2 * N - 1)
    omega = longattn.random_features(16, D, seed=3)
    m = _mask()
    out = []
    for causal in (False, True):
        for masked in (False, True):
            mk = m if masked else None
            tag = f"causal={causal}-masked={masked}"
            out += [
                (f"softmax-{tag}", (q, k, v),
                 lambda q, k, v, mk=mk, c=causal: longattn.softmax_attention(q, k, v, causal=c, key_padding_mask=mk),
                 lambda q, k, v, mk=mk, c=causal: softmax_ref(q, k, v, mask=mk, causal=c), ()),
                (f"softmax-bias-{tag}", (q, k, v, bias),
                 lambda q, k, v, b, mk=mk, c=causal: longattn.softmax_attention(q, k, v, causal=c, key_padding_mask=mk,
                                                                                rel_bias=b),
                 lambda q, k, v, b, mk=mk, c=causal: softmax_ref(q, k, v, b, mk, c), (3,)),
                (f"elu-{tag}", (q, k, v),
                 lambda q, k, v, mk=mk, c=causal: longattn.kernelized_attention(
                     q, k, v, feature_map="elu", causal=c, key_padding_mask=mk, eps=0.0),
                 lambda q, k, v, mk=mk, c=causal: weighted_ref(elu1(q), elu1(k), v, mask=mk, causal=c), ()),
                (f"favor-{tag}", (q, k, v),
                 lambda q, k, v, mk=mk, c=causal: longattn.kernelized_attention(
                     q, k, v, feature_map="favor", projection=omega, causal=c, key_padding_mask=mk, eps=0.0),
                 lambda q, k, v, mk=mk, c=causal: weighted_ref(favor_features(q, omega), favor_features(k, omega), v,
                                                               mask=mk, causal=c), ()),
                (f"elu-rel_bias-{tag}", (q, k, v, bias),
                 lambda q, k, v, b, mk=mk, c=causal: longattn.kernelized_attention(
                     q, k, v, feature_map="elu", causal=c, key_padding_mask=mk, rel_bias=b, eps=0.0),
                 lambda q, k, v, b, mk=mk, c=causal: weighted_ref(elu1(q), elu1(k), v, b, mk, c), (3,)),
                (f"kernelized_rpe-{tag}", (q.exp() / 4, k.exp() / 4, v, bias),
                 lambda fq, fk, v, b, mk=mk, c=causal: longattn.kernelized_rpe_attention(
                     fq, fk, v, b, causal=c, key_padding_mask=mk),
                 lambda fq, fk, v, b, mk=mk, c=causal: weighted_ref(fq, fk, v, b, mk, c), (3,)),
                (f"shatter-{tag}", (q[:, 0], k[:, 0], r(B, 3, N, DV), r(3, 2 * N - 1).sigmoid()),
                 lambda q, k, v, p, mk=mk, c=causal: longattn.shatter_attention(q, k, v, p, causal=c,
                                                                                key_padding_mask=mk),
                 lambda q, k, v, p, mk=mk, c=causal: shatter_ref(q, k, v, p, mk, c), (3,)),
            ]
        out.append((f"toeplitz-causal={causal}", (0.3 * r(H, 2 * N - 1), r(B, H, N, 3)),
                    lambda c, x, cz=causal: longattn.toeplitz_matmul(c, x, causal=cz),
                    lambda c, x, cz=causal: toeplitz_ref(c, x, cz), (0,)))
    for masked in (False, True):
        mk = m if masked else None
        out.append((f"yoso_expectation-masked={masked}", (q, k, v),
                    lambda q, k, v, mk=mk: longattn.yoso_expectation(q, k, v, hash_bits=4, key_padding_mask=mk),
                    lambda q, k, v, mk=mk: yoso_e_ref(q, k, v, 4, mk), ()))
    out.append(("toeplitz_2d", (0.3 * r(H, 2 * 5 - 1), 0.3 * r(H, 2 * 7 - 1), r(B, H, 35, 3)),
                lambda a, b, x: longattn.toeplitz_matmul_2d(a, b, x, height=5, width=7),
                lambda a, b, x: toeplitz2d_ref(a, b, x, 5, 7), (0, 1)))
    return out


CASES = cases()


def _err(x, ref):
    return (x.double() - ref).abs().max().item()


def _run(fn, inputs, grad_out):
    out = fn(*inputs)
    grads = torch.autograd.grad(out, [t for t in inputs if t.requires_grad], grad_out.to(out.dtype))
    return out, grads


@pytest.mark.parametrize("dtype", HALF, ids=["bf16", "fp16"])
@pytest.mark.parametrize("i", range(len(CASES)), ids=[c[0] for c in CASES])
def test_accuracy_rule(i, dtype):
    _, inputs, ours, ref, params = CASES[i]
    # The same values in every run: the inputs rounded to the half dtype (parameters stay
    # float32, as a model's parameters do under autocast).
    rounded = [t if j in params else t.to(dtype) for j, t in enumerate(inputs)]
    exact_in = [t.detach().double().requires_grad_() for t in rounded]
    with torch.no_grad():
        shape = ref(*exact_in).shape
    g = torch.randn(shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    exact, exact_grads = _run(ref, exact_in, g)

    ours_in = [t.detach().clone().requires_grad_() for t in rounded]
    out, grads = _run(ours, ours_in, g)
    assert out.dtype == dtype
    for t, gr in zip(ours_in, grads):
        assert gr.dtype == t.dtype

    low_in = [t.detach().to(dtype).requires_grad_() for t in rounded]
    low, low_grads = _run(ref, low_in, g)
    for what, a, b, c in [("output", out, low, exact)] + [
            (f"grad {j}", *abc) for j, abc in enumerate(zip(grads, low_grads, exact_grads))]:
        scale = max(1.0, c.abs().max().item())
        e_ours, e_low = _err(a, c), _err(b, c)
        # Where torch's own half-precision formula breaks down (fp16 overflows in exp and gives
        # inf or NaN), ours must still hold half precision's resolution: 2^-7 of the scale.
        bound = 2 * e_low + 1e-6 * scale if math.isfinite(e_low) else 2.0 ** -7 * scale
        assert e_ours <= bound, f"{what}: ours {e_ours:.3g}, torch in {dtype} {e_low:.3g}"


@pytest.mark.parametrize("dtype", HALF, ids=["bf16", "fp16"])
def test_yoso_codes_and_dropout_mask_are_float32_bits(dtype):
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(B, H, N, D, generator=g).to(dtype) for _ in range(3))
    kw = dict(hash_bits=4, num_hashes=8, seed=11)
    low = longattn.yoso_attention(q, k, v, **kw)
    high = longattn.yoso_attention(q.float(), k.float(), v.float(), **kw)
    assert low.dtype == dtype
    # Same codes: the float32 result of the same inputs, rounded once.
    torch.testing.assert_close(low, high.to(dtype), rtol=0, atol=0)
    x = torch.randn(4, 300, generator=g).to(dtype)
    y = longattn.dropout(x, 0.3, 9)
    assert y.dtype == dtype
    assert torch.equal(y == 0, longattn.dropout(x.float(), 0.3, 9) == 0)


def test_saved_tensors_are_half():
    """What autograd keeps between forward and backward: q, k, v and the output in bfloat16, the
    log-sum-exp in float32 (its rounding would cost accuracy): about half of float32's bytes."""
    q, k, v = (torch.randn(1, 2, 64, 16, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    sizes = {}
    for dt in (torch.bfloat16, torch.float32):
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
            longattn.softmax_attention(*(t.to(dt) for t in (q, k, v)))
        ours = [t for t in saved if t.dim() >= 3]
        sizes[dt] = sum(t.numel() * t.element_size() for t in ours)
        if dt == torch.bfloat16:
            assert {t.dtype for t in ours if t.dim() == 4} == {torch.bfloat16}
            assert {t.dtype for t in ours if t.dim() == 3} == {torch.float32}
    assert sizes[torch.bfloat16] <= 0.6 * sizes[torch.float32]


def test_parameter_dtype_is_checked():
    q = torch.randn(1, 2, 8, 4, dtype=torch.bfloat16)
    with pytest.raises(RuntimeError, match=r"rel_bias must have the dtype of q \(BFloat16\) or float32, got Double"):
        longattn.softmax_attention(q, q, q, rel_bias=torch.zeros(2, 15, dtype=torch.float64))
    with pytest.raises(RuntimeError, match=r"k must have the dtype of q"):
        longattn.softmax_attention(q, q.float(), q)


@pytest.mark.parametrize("attention,fastrpb", [("softmax", "none"), ("softmax-rpe", "none"), ("sikf", "1d"),
                                               ("favor", "none"), ("kernelized-rpe", "none"), ("yoso", "none"),
                                               ("yoso-e", "none"), ("shatter", "none")])
def test_classifier_under_autocast(attention, fastrpb):
    """The Python model trains a step under torch.autocast('cpu', bfloat16): finite loss and
    gradients, logits close to float32's."""
    from longattn.nn import Classifier, ModelConfig

    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=11, num_classes=3, max_len=40, dim=16, heads=2, ffn=32, layers=1,
                      attention=attention, fastrpb=fastrpb, dropout=0.0)
    model = Classifier(cfg)
    tokens = torch.randint(1, 11, (2, 40))
    mask = torch.ones(2, 40, dtype=torch.bool)
    mask[1, 30:] = False
    ref = model(tokens, mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(tokens, mask)
    loss = torch.nn.functional.cross_entropy(logits.float(), torch.tensor([0, 2]))
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert (logits.float() - ref).abs().max().item() < 0.1 * max(1.0, ref.abs().max().item())
