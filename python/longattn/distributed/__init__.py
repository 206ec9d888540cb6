"""Sequence-parallel operators over torch.distributed (issue 15).

Each function takes the same arguments as the single-process operator of ``longattn`` plus
``group`` (a torch.distributed process group, None = the default one), but q, k, v (and a key
padding mask) hold only this rank's slice of the sequence: rank r of P holds the tokens
[r*ceil(N/P), (r+1)*ceil(N/P)) of the N-token sequence, the last ranks possibly fewer.
Per-sequence parameters (rel_bias [H, 2N-1], Shatter's partition [Pp, 2N-1], Toeplitz
coefficients) are given whole and equal on every rank; their gradient, on every rank, is the
whole sequence's. Each returns this rank's slice of the output, forward and backward equal to
the single-process operator on the gathered sequence. Communication is torch.distributed only
(Gloo on CPU). See docs/distributed.md for the schemes and their message sizes.
"""
from ._attention import softmax_attention, shatter_attention  # noqa: F401
from ._kernelized import kernelized_attention  # noqa: F401
from ._toeplitz import toeplitz_matmul  # noqa: F401
from ._yoso import yoso_attention  # noqa: F401
from ._comm import sequence_length  # noqa: F401

__all__ = ["softmax_attention", "shatter_attention", "kernelized_attention", "toeplitz_matmul",
           "yoso_attention", "sequence_length"]
