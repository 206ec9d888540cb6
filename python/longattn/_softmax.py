import torch

__all__ = ["softmax_attention"]


def softmax_attention(q, k, v, *, causal=False, key_padding_mask=None, rel_bias=None, scale=None, path="fused"):
    """Exact softmax attention, fused: O(N) extra memory, forward and backward.

    q [B, H, Nq, D], k [B, H, Nk, D], v [B, H, Nk, Dv] -> [B, H, Nq, Dv] (float32, float64, bfloat16 or float16).
    key_padding_mask: [B, Nk] bool, True = the key takes part. rel_bias: [H, 2N-1] learned
    relative bias added to the logit of (i, j) at index j - i + N - 1 (needs Nq == Nk == N).
    causal: key j takes part for query i only when j <= i. scale: default 1/sqrt(D).
    A query with no key taking part outputs zeros.
    path: "fused" (default) runs the fused CPU kernel; "reference" runs the same formula written
    with torch operations in query chunks (never an N x N tensor), the path every non-CPU device
    takes whatever `path` says.
    """
    return torch.ops.longattn.softmax_attention(
        q, k, v, causal=causal, key_padding_mask=key_padding_mask, rel_bias=rel_bias, scale=scale,
        path=path,
    )
