"""toeplitz_matmul(_2d) and kernelized_rpe_attention through torch: references, fp64
gradchecks, both paths, causality, bad input, empty tensors."""
import itertools

import pytest
import torch

import longattn


def toeplitz_dense(coeffs, N, causal=False):
    """[H, N, N] matrix T[h, i, j] = coeffs[h, j - i + N - 1] (zero above the diagonal if causal)."""
    i = torch.arange(N)
    T = coeffs[:, (i[None, :] - i[:, None]) + N - 1]
    if causal:
        T = T * torch.ones(N, N, dtype=coeffs.dtype).tril()
    return T


def toeplitz_ref(coeffs, x, causal=False):
    return toeplitz_dense(coeffs.double(), x.shape[2], causal).unsqueeze(0) @ x.double()


def bias_2d_dense(row, col, height, width):
    """[H, N, N] with B[(a,b),(a',b')] = row[a'-a+height-1] + col[b'-b+width-1]."""
    a = torch.arange(height).repeat_interleave(width)
    b = torch.arange(width).repeat(height)
    return row[:, (a[None, :] - a[:, None]) + height - 1] + col[:, (b[None, :] - b[:, None]) + width - 1]


@pytest.mark.parametrize("causal,path", list(itertools.product([False, True], ["fft", "direct", "auto"])))
def test_gradcheck_fp64(causal, path):
    B, H, N, C = 2, 3, 11, 4
    c = torch.randn(H, 2 * N - 1, dtype=torch.float64, requires_grad=True)
    x = torch.randn(B, H, N, C, dtype=torch.float64, requires_grad=True)
    f = lambda c, x: longattn.toeplitz_matmul(c, x, causal=causal, path=path)  # noqa: E731
    assert torch.autograd.gradcheck(f, (c, x))
    torch.testing.assert_close(f(c, x), toeplitz_ref(c, x, causal), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("N", [1, 2, 97, 1000])
def test_float32_paths_agree_with_reference(N):
    H, C = 2, 37
    c = torch.randn(H, 2 * N - 1)
    # [B, N, H, C] buffer viewed as [B, H, N, C]: strides pass through unchanged.
    x = torch.randn(2, N, H, C).transpose(1, 2)
    ref = toeplitz_ref(c, x)
    for path in ("fft", "direct"):
        y = longattn.toeplitz_matmul(c, x, path=path)
        # float32 FFT: rounding ~ eps * log2(L) relative to the largest output.
        assert (y.double() - ref).abs().max() <= 1e-5 * ref.abs().max() * max(1.0, N ** 0.5 / 4)


def test_causal_does_not_leak():
    N, i0 = 300, 120
    c = torch.randn(2, 2 * N - 1, dtype=torch.float64)
    x = torch.randn(1, 2, N, 5, dtype=torch.float64)
    y0 = longattn.toeplitz_matmul(c, x, causal=True)
    x2 = x.clone()
    x2[:, :, i0 + 1:] += 1e3
    y1 = longattn.toeplitz_matmul(c, x2, causal=True)
    assert (y0[:, :, : i0 + 1] - y1[:, :, : i0 + 1]).abs().max() < 1e-8
    assert (y0[:, :, i0 + 1] - y1[:, :, i0 + 1]).abs().max() > 1.0


@pytest.mark.parametrize("height,width,path", [(3, 4, "fft"), (3, 4, "direct"), (1, 6, "auto"), (5, 1, "auto")])
def test_2d_gradcheck_and_dense(height, width, path):
    B, H, C = 2, 2, 3
    N = height * width
    row = torch.randn(H, 2 * height - 1, dtype=torch.float64, requires_grad=True)
    col = torch.randn(H, 2 * width - 1, dtype=torch.float64, requires_grad=True)
    x = torch.randn(B, H, N, C, dtype=torch.float64, requires_grad=True)
    f = lambda r, c, x: longattn.toeplitz_matmul_2d(r, c, x, height=height, width=width, path=path)  # noqa: E731
    assert torch.autograd.gradcheck(f, (row, col, x))
    ref = bias_2d_dense(row, col, height, width).unsqueeze(0) @ x
    torch.testing.assert_close(f(row, col, x), ref, rtol=1e-10, atol=1e-12)


def test_bad_input_messages():
    x = torch.randn(2, 3, 5, 4)
    with pytest.raises(RuntimeError, match=r"toeplitz_matmul: coeffs must have shape \[H, 2N-1\] = \[3, 9\], got \[3, 8\]"):
        longattn.toeplitz_matmul(torch.randn(3, 8), x)
    with pytest.raises(RuntimeError, match=r"toeplitz_matmul: x must have 4 dimensions"):
        longattn.toeplitz_matmul(torch.randn(3, 9), torch.randn(3, 5, 4))
    with pytest.raises(RuntimeError, match="dtype"):
        longattn.toeplitz_matmul(torch.randn(3, 9, dtype=torch.float64), x)
    with pytest.raises(RuntimeError, match=r"path must be 'auto', 'direct', 'fft' or 'reference', got 'fast'"):
        longattn.toeplitz_matmul(torch.randn(3, 9), x, path="fast")
    with pytest.raises(RuntimeError, match=r"toeplitz_matmul_2d: x must have N = height \* width = 6 .* got N = 5"):
        longattn.toeplitz_matmul_2d(torch.randn(3, 3), torch.randn(3, 5), x, height=2, width=3)
    with pytest.raises(RuntimeError, match=r"col_coeffs must have shape \[H, 2\*width-1\] = \[3, 9\], got \[3, 5\]"):
        longattn.toeplitz_matmul_2d(torch.randn(3, 1), torch.randn(3, 5), x, height=1, width=5)


@pytest.mark.parametrize("shape", [(0, 2, 5, 3), (1, 2, 5, 0), (1, 0, 5, 3), (1, 2, 0, 3)])
def test_empty_tensors(shape):
    B, H, N, C = shape
    c = torch.randn(H, max(2 * N - 1, 0), requires_grad=True)
    x = torch.randn(*shape, requires_grad=True)
    y = longattn.toeplitz_matmul(c, x)
    assert y.shape == x.shape
    y.sum().backward()
    assert torch.equal(c.grad, torch.zeros_like(c))
    assert x.grad.shape == x.shape


# ---------------------------------------------------------------------------------- Luo et al.

def rpe_dense(fq, fk, v, b, causal=False, mask=None, eps=0.0):
    """Dense fp64 formula: z_i = sum_j w[j-i] fq_i.fk_j v_j / (sum_j w[j-i] fq_i.fk_j + eps) with
    w = e^{b} (eps is added to the denominator as it stands)."""
    fq, fk, v, b = fq.double(), fk.double(), v.double(), b.double()
    N = fq.shape[2]
    w = b.exp()
    S = (fq @ fk.transpose(-1, -2)) * toeplitz_dense(w, N, causal).unsqueeze(0)
    if mask is not None:
        S = S * mask[:, None, None, :].double()
    den = S.sum(-1, keepdim=True)
    return torch.where(den > 0, (S @ v) / (den + eps), torch.zeros(()).double())


@pytest.mark.parametrize("causal,use_mask", list(itertools.product([False, True], repeat=2)))
def test_kernelized_rpe_gradcheck_fp64(causal, use_mask):
    B, H, N, m, Dv = 2, 2, 9, 3, 4
    fq = (torch.rand(B, H, N, m, dtype=torch.float64) + 0.1).requires_grad_()
    fk = (torch.rand(B, H, N, m, dtype=torch.float64) + 0.1).requires_grad_()
    v = torch.randn(B, H, N, Dv, dtype=torch.float64, requires_grad=True)
    b = torch.randn(H, 2 * N - 1, dtype=torch.float64, requires_grad=True)
    mask = None
    if use_mask:
        mask = torch.rand(B, N) > 0.3
        mask[1] = False  # a batch with no key: zero output and gradient
        mask[1, N - 1] = True  # except the last key (causal: only the last query sees it)
    f = lambda fq, fk, v, b: longattn.kernelized_rpe_attention(  # noqa: E731
        fq, fk, v, b, causal=causal, key_padding_mask=mask, eps=0.01)
    assert torch.autograd.gradcheck(f, (fq, fk, v, b))
    torch.testing.assert_close(f(fq, fk, v, b), rpe_dense(fq, fk, v, b, causal, mask, 0.01), rtol=1e-9, atol=1e-11)


def test_kernelized_rpe_float32_and_empty_rows():
    B, H, N, m, Dv = 2, 3, 200, 16, 8
    fq, fk = torch.rand(B, H, N, m), torch.rand(B, H, N, m)
    # A bias of spread ~1 (learned biases start at N(0, 0.02)): every row's weighted mass stays
    # far above the float FFT's absolute rounding level (see kernels/kernelized_rpe).
    v, b = torch.randn(B, H, N, Dv), torch.randn(H, 2 * N - 1)
    mask = torch.ones(B, N, dtype=torch.bool)
    mask[0] = False
    mask[1, :50] = False
    for causal in (False, True):
        z = longattn.kernelized_rpe_attention(fq, fk, v, b, causal=causal, key_padding_mask=mask)
        ref = rpe_dense(fq, fk, v, b, causal, mask)
        assert torch.isfinite(z).all()
        assert torch.equal(z[0], torch.zeros_like(z[0]))
        if causal:
            assert torch.equal(z[1, :, :50], torch.zeros_like(z[1, :, :50]))
        torch.testing.assert_close(z.double(), ref, rtol=1e-4, atol=1e-4)


def test_kernelized_rpe_bad_input():
    fq = torch.rand(1, 2, 5, 3)
    with pytest.raises(RuntimeError, match=r"kernelized_rpe_attention: rel_bias must have shape \[H, 2N-1\] = \[2, 9\], got \[2, 5\]"):
        longattn.kernelized_rpe_attention(fq, fq, torch.randn(1, 2, 5, 4), torch.randn(2, 5))
    with pytest.raises(RuntimeError, match=r"phi_k must have shape"):
        longattn.kernelized_rpe_attention(fq, torch.rand(1, 2, 6, 3), torch.randn(1, 2, 5, 4), torch.randn(2, 9))


def test_kernelized_rpe_with_random_features_approaches_softmax_rel_bias():
    # Positive random features phi(x) = exp(W x - |x|^2/2) / sqrt(m), W iid N(0, I), estimate
    # exp(q.k) without bias, so z-hat approaches softmax(q.k + b) v. Derived bound: z-hat = N/D is
    # a ratio of means over m iid features, X_r = sum_j w_j f_r(q) f_r(k_j) v_j and
    # Y_r = sum_j w_j f_r(q) f_r(k_j); by the delta method z-hat - z ~ mean_r(X_r - z Y_r) / D, so
    # E|z-hat - z|^2 ~ Var(X_r - z Y_r) / (m D^2). We estimate that variance from the same features
    # and require the observed RMS error within 1.5x the prediction (plus a 1/m second-order
    # allowance), and a 64x larger m to cut the error by at least 4x (theory: 8x).
    gen = torch.Generator().manual_seed(1)
    B, H, N, D, Dv = 1, 2, 48, 4, 3
    # Small norms: the features are log-normal with relative variance ~ e^{|q+k|^2} - 1 per
    # feature; larger norms give heavy tails that a few draws cannot sample (the RMS over draws
    # then underestimates the error at small m and the 1/sqrt(m) law is not visible).
    q = 0.25 * torch.randn(B, H, N, D, dtype=torch.float64, generator=gen)
    k = 0.25 * torch.randn(B, H, N, D, dtype=torch.float64, generator=gen)
    v = torch.randn(B, H, N, Dv, dtype=torch.float64, generator=gen)
    b = 0.5 * torch.randn(H, 2 * N - 1, dtype=torch.float64, generator=gen)
    exact = longattn.softmax_attention(q, k, v, rel_bias=b, scale=1.0)

    def features(x, W):
        return torch.exp(x @ W.T - 0.5 * (x * x).sum(-1, keepdim=True)) / W.shape[0] ** 0.5

    errors = {}
    for m in (64, 4096):
        observed_sq, predicted_sq = 0.0, 0.0
        for _ in range(8):  # independent feature draws: the error of one draw is shared by all rows
            W = torch.randn(m, D, dtype=torch.float64, generator=gen)
            fq, fk = features(q, W), features(k, W)
            approx = longattn.kernelized_rpe_attention(fq, fk, v, b)
            # Per-feature terms f_r(q_i) sum_j w_ij f_r(k_j) [v_j, 1], for the variance estimate.
            wmat = toeplitz_dense((b - b.max(dim=1, keepdim=True).values).exp(), N).unsqueeze(0)
            per = fq.unsqueeze(-1) * torch.einsum("bhij,bhjr,bhjd->bhird", wmat, fk,
                                                  torch.cat([v, torch.ones_like(v[..., :1])], -1))
            X, Y = per[..., :Dv] * m, per[..., Dv:] * m  # means over r are N-hat, D-hat
            var = (X - exact.unsqueeze(-2) * Y).var(-2) / (m * Y.mean(-2) ** 2)
            predicted_sq += var.mean().item() / 8
            observed_sq += (approx - exact).pow(2).mean().item() / 8
        assert observed_sq ** 0.5 <= 1.5 * predicted_sq ** 0.5 + 1.0 / m, (m, observed_sq, predicted_sq)
        errors[m] = observed_sq ** 0.5
    assert errors[4096] <= errors[64] / 4, errors  # theory: 8x
