import torch

__all__ = ["kernelized_attention", "random_features", "feature_map"]


def kernelized_attention(q, k, v, *, feature_map, causal=False, key_padding_mask=None,
                         projection=None, eps=1e-6, rel_bias=None, path="fused"):
    """Kernelized (linear) attention, O(N) time and memory, forward and backward.

    out_i = phi(q_i)^T S_i / (phi(q_i)^T s_i + eps), S_i = sum_j phi(k_j) v_j^T and
    s_i = sum_j phi(k_j) over the keys j that take part (unmasked; with ``causal``, j <= i).
    q [B, H, Nq, D], k [B, H, Nk, D], v [B, H, Nk, Dv] -> [B, H, Nq, Dv] (float32, float64, bfloat16 or float16).

    feature_map: ``'elu'`` (elu(x) + 1), ``'relu'``, ``'sikf'`` (exp(x - c), FastRPB's
    shift-invariant kernel: adding a constant to a query row or to all keys changes nothing),
    ``'favor'`` (Performer's positive random features exp(omega x - |x|^2/2)/sqrt(m), with
    ``projection`` omega [m, D] or [H, m, D] from :func:`random_features`; it estimates
    exp(q.k), so pass q and k scaled by D**-0.25 to estimate softmax(q k^T / sqrt(D))).
    The exponential maps are stabilised by maxima that cancel (see the kernel header), and eps
    is added to the stabilised denominator. key_padding_mask: [B, Nk] bool, True = the key
    takes part; masked keys count in neither sum. A query with no key outputs zeros.
    The projection is a constant (no gradient).

    eps (>= 0) is added to the denominator of the stabilised features: for elu/relu the
    features themselves; for sikf/favor phi(q_i) e^{-c_i} and phi(k_j) e^{-R_i}, c_i the query
    row's largest exponent and R_i the largest over the keys that take part for row i (all of
    them; with ``causal``, j <= i), so that the largest product is about 1. rel_bias does not
    change what eps means.

    rel_bias: [H, 2N-1] (Nq == Nk == N), Luo et al.'s relative positional encoding: key j is
    weighted by e^{rel_bias[j - i + N - 1]} for query i, in both sums:
    out_i = sum_j e^{b[j-i]} phi(q_i).phi(k_j) v_j / (sum_j e^{b[j-i]} phi(q_i).phi(k_j) + eps)
    (phi the stabilised features above). Exact for any finite bias (-inf: the offset takes no
    part; NaN and +inf are errors): the kernel takes a linear trend out of the bias and
    recomputes directly any row the FFT cannot resolve (docs/toeplitz.md). Computed by FFT
    Toeplitz products over the m*(Dv+1) feature channels in chunks, O(N log N m Dv) time and
    O(N (m+Dv)) memory, plus O(N (m+Dv)) per directly computed row. Differentiable in rel_bias.

    path: ``'fused'`` (default: the CPU kernel; tensors on any other device take the reference
    path, the only one there) or ``'reference'``: the same formula, stabilisers and eps written
    with torch operations (ops/reference/), for any device and selectable on CPU; memory-lean
    (chunked scans, never an N x N tensor); with rel_bias it computes every row directly in query
    chunks (exact for any finite bias, O(N^2 (m+Dv)) time).
    """
    return torch.ops.longattn.kernelized_attention(
        q, k, v, feature_map=feature_map, causal=causal, key_padding_mask=key_padding_mask,
        projection=projection, eps=eps, rel_bias=rel_bias, path=path)


def random_features(m, d, *, seed, orthogonal=True, scaling="chi", heads=None, dtype=None,
                    device=None):
    """Performer's random projection omega [m, d] (or [heads, m, d], independent per head).

    orthogonal: Gaussian d x d blocks orthogonalised by QR, stacked to m rows; scaling
    ``'chi'`` gives the rows chi(d)-distributed norms (each row marginally N(0, I)), ``'sqrt_d'``
    norm sqrt(d). Not orthogonal: i.i.d. Gaussian rows. The same seed gives the same bits on
    every machine. dtype: torch.float32 (default) or torch.float64. device: where the result
    lives (default CPU); it is drawn on the CPU and moved, so every device gets the same bits.
    """
    return torch.ops.longattn.random_features(m, d, seed=seed, orthogonal=orthogonal,
                                              scaling=scaling, heads=heads, dtype=dtype,
                                              device=device)


def feature_map(x, *, feature_map, projection=None, key_padding_mask=None, path="fused"):
    """The feature maps of :func:`kernelized_attention`, row by row: x [B, H, N, D] ->
    (phi [B, H, N, m], shift [B, H, N]) with phi = phi(x) e^{-shift}: shift is the row's largest
    exponent for 'sikf' (max_d x_d) and 'favor' (max_r omega_r.x - |x|^2/2), 0 for 'elu' and
    'relu'. key_padding_mask [B, N] (True = the row takes part): other rows are never read and
    give phi = 0, shift = 0 and zero gradients. Differentiable in x (shift included). The same
    code as the attention kernels use. path: ``'fused'`` (default; the CPU kernel, other devices
    take the reference path) or ``'reference'`` (the same maps written with torch operations).
    """
    return torch.ops.longattn.feature_map(x, feature_map=feature_map, projection=projection,
                                          key_padding_mask=key_padding_mask, path=path)
