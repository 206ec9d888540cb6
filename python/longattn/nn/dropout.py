"""Dropout on longattn.dropout: the twin of longattn::nn::Dropout in C++."""
import torch
from torch import nn

from .._dropout import dropout

__all__ = ["Dropout"]


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
        return dropout(x, self.p, seed)
