import torch

from ._seed import seed_bits

__all__ = ["dropout"]


def dropout(x, p, seed, *, path="fused"):
    """x * keep / (1 - p) with a counter-based mask: keep depends only on (seed, element index),
    so nothing is stored for the backward and the result is the same on any thread count.

    The drop probability is p rounded to a multiple of 2^-16 and kept elements are scaled by the
    inverse of the rounded keep probability, so E[y] = x exactly. Always applies (the module
    ``longattn.nn.Dropout`` is the identity in eval mode). Differentiable in x.

    path: ``"fused"`` (the CPU kernel) or ``"reference"`` (the same mask bits computed with torch
    integer operations, on any device; tensors off the CPU take it whatever ``path`` says).
    """
    return torch.ops.longattn.dropout(x, float(p), seed_bits("dropout", seed), path=path)
