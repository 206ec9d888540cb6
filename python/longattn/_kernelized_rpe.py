import torch

__all__ = ["kernelized_rpe_attention"]


def kernelized_rpe_attention(phi_q, phi_k, v, rel_bias, *, causal=False, key_padding_mask=None,
                             eps=0.0):
    """Kernelized attention with a relative positional encoding (Luo et al., 2021), on features.

    phi_q, phi_k [B, H, N, m] (nonnegative, already feature-mapped), v [B, H, N, Dv],
    rel_bias [H, 2N-1] (offset j - i at index j - i + N - 1) -> [B, H, N, Dv]:
    z_i = sum_j w[j-i] phi_q_i.phi_k_j v_j / (sum_j w[j-i] phi_q_i.phi_k_j + eps) with
    w = e^{b - max b} (max over the offsets in use; the shift cancels when eps = 0).
    Computed by FFT over the m*(Dv+1) channels in chunks: O(N log N m Dv) time, O(N (m+Dv))
    memory. Rows with no weighted key give zeros. Differentiable in all four tensors.
    """
    return torch.ops.longattn.kernelized_rpe_attention(
        phi_q, phi_k, v, rel_bias, causal=causal, key_padding_mask=key_padding_mask, eps=eps)
