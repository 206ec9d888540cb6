import torch

__all__ = ["kernelized_rpe_attention"]


def kernelized_rpe_attention(phi_q, phi_k, v, rel_bias, *, causal=False, key_padding_mask=None,
                             eps=0.0, path="fused"):
    """Kernelized attention with a relative positional encoding (Luo et al., 2021), on features.

    phi_q, phi_k [B, H, N, m] (nonnegative, already feature-mapped), v [B, H, N, Dv],
    rel_bias [H, 2N-1] (offset j - i at index j - i + N - 1) -> [B, H, N, Dv]:
    z_i = sum_j e^{b[j-i]} phi_q_i.phi_k_j v_j / (sum_j e^{b[j-i]} phi_q_i.phi_k_j + eps),
    eps (>= 0) added to that denominator as it stands (the bias is not shifted).
    Exact for any finite bias (-inf: the offset takes no part; NaN, +inf are errors): the
    kernel takes a linear trend out of the bias, runs the FFT at a common scale and recomputes
    directly every row whose denominator the FFT's rounding could not resolve
    (docs/toeplitz.md). O(N log N m Dv) time, O(N (m+Dv)) memory, plus O(N (m+Dv)) per
    directly computed row. Rows with no key give zeros. Masked keys are never read.
    Differentiable in all four tensors.

    path: ``'fused'`` (default: the CPU kernel; tensors on any other device take the reference
    path, the only one there) or ``'reference'``: torch operations on any device, every row
    computed directly with its own shift in query chunks (exact for any finite bias without the
    detrending and fallback; O(N^2 (m+Dv)) time, O(N) memory per row of a chunk, no N x N tensor).
    """
    return torch.ops.longattn.kernelized_rpe_attention(
        phi_q, phi_k, v, rel_bias, causal=causal, key_padding_mask=key_padding_mask, eps=eps,
        path=path)
