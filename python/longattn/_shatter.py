import torch

__all__ = ["shatter_attention"]


def shatter_attention(q, k, v, partition, *, activation="softmax", causal=False, key_padding_mask=None,
                      scale=None, path="fused"):
    """Shatter attention: one head, P value streams weighted by a partition of relative positions.

    q, k [B, N, D] (one head), v [B, P, N, Dv] (one value stream per part), partition [P, 2N-1]
    (weight of part p at offset r = j - i, index r + N - 1) -> [B, N, Dv]:

        out_i = sum_p sum_j a_ij * partition[p, j - i + N - 1] * v[p]_j

    a_ij is the softmax over the keys taking part of scale * q_i.k_j (activation='softmax'), or
    its sigmoid elementwise with no normalisation (activation='sigmoid'). key_padding_mask:
    [B, N] bool, True = the key takes part. causal: key j takes part for query i only when
    j <= i. scale: default 1/sqrt(D). A query with no key taking part outputs zeros. Fused (no
    N x N tensor), float32, float64, bfloat16 or float16, differentiable in q, k, v and partition. See
    docs/shatter.md for what is the paper's and what is ours.
    path: "fused" (default) runs the fused CPU kernel; "reference" runs the same formula written
    with torch operations in query chunks (never an N x N tensor), the path every non-CPU device
    takes whatever `path` says.
    """
    return torch.ops.longattn.shatter_attention(
        q, k, v, partition, activation=activation, causal=causal, key_padding_mask=key_padding_mask,
        scale=scale, path=path,
    )
