import torch

from ._seed import seed_bits

__all__ = ["yoso_attention", "yoso_expectation"]


def yoso_attention(q, k, v, *, hash_bits, num_hashes, seed, key_padding_mask=None,
                   hashing="gaussian", backward="lsh", path="fused"):
    """YOSO attention: Bernoulli sampling by LSH, linear in N (Zeng et al., ICML 2021).

    Y_i = (1/m) Σ_h Σ_j 1[f_h(q̂_i) = f_h(k̂_j)] v_j with m = num_hashes hash functions of
    τ = hash_bits sign bits (``hashing='gaussian'``: a Gaussian projection; ``'hadamard'``: the
    authors' fast H·D₃·H·D₂·H·D₁ pseudo-rotation). q and k are L2-normalised inside; the output is
    not normalised. The expectation over hashes is ``yoso_expectation``.

    q [B, H, Nq, D], k [B, H, Nk, D], v [B, H, Nk, Dv] -> [B, H, Nq, Dv] (float32, float64, bfloat16 or float16).
    key_padding_mask: [B, Nk] bool, True = the key takes part; when Nq == Nk it masks the
    queries too (their rows are zero). seed: the same seed gives the same hashes and output,
    bit for bit, whatever the thread count; hashes differ per (batch, head).

    The backward is the paper's SURROGATE, not the true gradient: dE/dx is replaced by
    (τ/2)·E(x), E(x) = (1 − arccos(x)/π)^τ. ``backward='lsh'`` estimates it with the same hashes
    (linear cost); ``'exact'`` computes it over all pairs (O(N²) time, O(N) memory).

    path: ``"fused"`` (the CPU kernels) or ``"reference"`` (torch operations on any device: the
    same hash codes for the same seed, sort/index_add hash tables); tensors off the CPU take the
    reference whatever ``path`` says.
    """
    return torch.ops.longattn.yoso_attention(
        q, k, v, hash_bits=hash_bits, num_hashes=num_hashes, seed=seed_bits("yoso_attention", seed),
        key_padding_mask=key_padding_mask, hashing=hashing, backward=backward, path=path)


def yoso_expectation(q, k, v, *, hash_bits, key_padding_mask=None, backward="exact", path="fused"):
    """YOSO-E: Y_i = Σ_j (1 − arccos(q̂_iᵀk̂_j)/π)^τ v_j, fused (O(N²) time, O(N) extra memory).

    q and k are L2-normalised inside. ``backward='exact'``: the true derivative
    τ(1 − θ/π)^{τ−1} / (π√(1 − x²)), evaluated at |x| ≤ 1 − 1e-6 (it is unbounded at ±1);
    ``'surrogate'``: the paper's bounded (τ/2)·E(x). Masks as in ``yoso_attention``.
    path: ``"fused"`` or ``"reference"`` (torch operations in query chunks, any device).
    """
    return torch.ops.longattn.yoso_expectation(
        q, k, v, hash_bits=hash_bits, key_padding_mask=key_padding_mask, backward=backward, path=path)
