import torch

__all__ = ["kernelized_attention", "random_features"]


def kernelized_attention(q, k, v, *, feature_map, causal=False, key_padding_mask=None,
                         projection=None, eps=1e-6):
    """Kernelized (linear) attention, O(N) time and memory, forward and backward.

    out_i = phi(q_i)^T S_i / (phi(q_i)^T s_i + eps), S_i = sum_j phi(k_j) v_j^T and
    s_i = sum_j phi(k_j) over the keys j that take part (unmasked; with ``causal``, j <= i).
    q [B, H, Nq, D], k [B, H, Nk, D], v [B, H, Nk, Dv] -> [B, H, Nq, Dv] (float32 or float64).

    feature_map: ``'elu'`` (elu(x) + 1), ``'relu'``, ``'sikf'`` (exp(x - c), FastRPB's
    shift-invariant kernel: adding a constant to a query row or to all keys changes nothing),
    ``'favor'`` (Performer's positive random features exp(omega x - |x|^2/2)/sqrt(m), with
    ``projection`` omega [m, D] or [H, m, D] from :func:`random_features`; it estimates
    exp(q.k), so pass q and k scaled by D**-0.25 to estimate softmax(q k^T / sqrt(D))).
    The exponential maps are stabilised by maxima that cancel (see the kernel header), and eps
    is added to the stabilised denominator. key_padding_mask: [B, Nk] bool, True = the key
    takes part; masked keys count in neither sum. A query with no key outputs zeros.
    The projection is a constant (no gradient).
    """
    return torch.ops.longattn.kernelized_attention(
        q, k, v, feature_map=feature_map, causal=causal, key_padding_mask=key_padding_mask,
        projection=projection, eps=eps)


def random_features(m, d, *, seed, orthogonal=True, scaling="chi", heads=None, dtype=None):
    """Performer's random projection omega [m, d] (or [heads, m, d], independent per head).

    orthogonal: Gaussian d x d blocks orthogonalised by QR, stacked to m rows; scaling
    ``'chi'`` gives the rows chi(d)-distributed norms (each row marginally N(0, I)), ``'sqrt_d'``
    norm sqrt(d). Not orthogonal: i.i.d. Gaussian rows. The same seed gives the same bits on
    every machine. dtype: torch.float32 (default) or torch.float64.
    """
    return torch.ops.longattn.random_features(m, d, seed=seed, orthogonal=orthogonal,
                                              scaling=scaling, heads=heads, dtype=dtype)
