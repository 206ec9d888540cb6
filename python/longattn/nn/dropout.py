"""Dropout on longattn.dropout: the twin of longattn::nn::Dropout in C++."""
import contextlib

import torch
from torch import nn

from .._dropout import dropout

__all__ = ["Dropout", "row_offset"]

_GOLDEN = 0x9E3779B97F4A7C15  # the kernel's counter step (kernels/dropout/dropout.h)
_row_offset = 0


@contextlib.contextmanager
def row_offset(first):
    """Data-parallel training (the twin of C++ ``longattn::nn::DropoutRowOffset``): inside the block the
    rows (dim 0) of every tensor Dropout sees are rows ``first``, ``first + 1``, ... of the global batch,
    and get the masks one process running the whole batch would draw (the same seed, shifted by
    ``first`` x elements per row; element i reads counter i // 4, so a multiple of 4 elements per row
    is required). Every rank draws the same seeds when all start from the same ``torch.manual_seed``."""
    global _row_offset
    previous, _row_offset = _row_offset, int(first)
    try:
        yield
    finally:
        _row_offset = previous


class Dropout(nn.Module):
    """In training, ``longattn.dropout(x, p, seed)`` with a fresh seed drawn from torch's default
    generator (``torch.randint(0, 2**62, (1,))``, as the C++ module), so ``torch.manual_seed``
    makes runs repeatable; the identity in eval mode or with p = 0."""

    def __init__(self, p=0.5):
        super().__init__()
        # 1 - 2^-16: the mask's resolution (kernels/dropout/dropout.h, kDropoutMaxP); a larger p
        # would round to 1 and drop every element.
        if not 0.0 <= p <= 1.0 - 2.0**-16:
            raise ValueError(f"Dropout: p must be in [0, 1 - 2^-16] (the mask's resolution), got {p!r}")
        self.p = p

    def extra_repr(self):
        return f"p={self.p}"

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        seed = int(torch.randint(0, 2**62, (1,)).item())
        if _row_offset and x.numel():
            per_row = x.numel() // x.shape[0]
            if per_row % 4:
                raise ValueError(f"Dropout: data-parallel masks need a multiple of 4 elements per example, got {per_row}")
            seed = (seed + (_row_offset * per_row // 4) * _GOLDEN) % 2**64
            seed -= 2**64 if seed >= 2**63 else 0  # the operator takes a signed 64-bit seed
        return dropout(x, self.p, seed)
