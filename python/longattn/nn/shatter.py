"""The Shatter layer: single-headed attention with a soft partition of relative positions.

What is the paper's and what is ours: docs/shatter.md.
"""
import math

import torch
from torch import nn

from .._shatter import shatter_attention

__all__ = ["Shatter", "ShatterPartition"]


def signed_log_distance(n, *, dtype=None, device=None):
    """u(r) = sign(r) log(1 + |r|) for the offsets r = -(n-1) .. n-1 (index r + n - 1)."""
    r = torch.arange(-(n - 1), n, dtype=dtype or torch.get_default_dtype(), device=device)
    return torch.sign(r) * torch.log1p(r.abs())


class ShatterPartition(nn.Module):
    """A soft partition of the relative positions into P parts: pi_p(r) >= 0, sum_p pi_p(r) = 1.

    kind='softmax' (learnable): pi_p(r) = softmax over p of sum_k weight[p, k] u(r)^k, a polynomial
        of degree `degree` in the signed log-distance u(r) = sign(r) log(1 + |r|). Initialised as
        P soft bins ordered along u, centred evenly on [-log(1 + init_range), log(1 + init_range)]
        (for P = 4: far left, near left, near right, far right).
    kind='bernstein' (fixed): the Bernstein basis of degree P - 1 in
        t = (1 + u(r) / log(1 + max_distance)) / 2, clamped to [0, 1].

    forward(n) returns the partition as a [P, 2n - 1] tensor (index r + n - 1).
    """

    def __init__(self, num_parts, kind="softmax", *, degree=2, init_range=64.0, max_distance=512,
                 device=None, dtype=None):
        super().__init__()
        if num_parts < 1:
            raise ValueError(f"ShatterPartition: num_parts must be >= 1, got {num_parts}")
        if kind not in ("softmax", "bernstein"):
            raise ValueError(f"ShatterPartition: kind must be 'softmax' or 'bernstein', got {kind!r}")
        self.num_parts, self.kind, self.degree, self.max_distance = num_parts, kind, degree, max_distance
        if kind == "softmax":
            if degree < 1:
                raise ValueError(f"ShatterPartition: degree must be >= 1, got {degree}")
            self.weight = nn.Parameter(torch.zeros(num_parts, degree + 1, device=device, dtype=dtype))
            self.reset_parameters(init_range)
        else:
            self.register_parameter("weight", None)

    @torch.no_grad()
    def reset_parameters(self, init_range=64.0):
        if self.weight is None:
            return
        # Soft bins: logits -(u - c_p)^2 / tau; the -u^2 / tau term is common to every part and
        # cancels in the softmax, leaving (2 c_p u - c_p^2) / tau, linear in u.
        P, top = self.num_parts, math.log1p(init_range)
        centres = torch.linspace(-top, top, P) if P > 1 else torch.zeros(1)
        tau = (2 * top / (P - 1)) ** 2 / 2 if P > 1 else 1.0
        self.weight.zero_()
        self.weight[:, 0] = -centres**2 / tau
        self.weight[:, 1] = 2 * centres / tau

    def forward(self, n):
        dtype = self.weight.dtype if self.weight is not None else torch.get_default_dtype()
        device = self.weight.device if self.weight is not None else None
        u = signed_log_distance(n, dtype=dtype, device=device)
        if self.kind == "softmax":
            powers = torch.stack([u**k for k in range(self.degree + 1)])  # [degree+1, 2n-1]
            return torch.softmax(self.weight @ powers, dim=0)
        t = ((1 + u / math.log1p(self.max_distance)) / 2).clamp(0, 1)
        P = self.num_parts
        return torch.stack([math.comb(P - 1, p) * t**p * (1 - t) ** (P - 1 - p) for p in range(P)])

    def extra_repr(self):
        return f"num_parts={self.num_parts}, kind={self.kind!r}" + (
            f", degree={self.degree}" if self.kind == "softmax" else f", max_distance={self.max_distance}")


class Shatter(nn.Module):
    """Shatter self-attention layer: one head, P value matrices over a soft partition of offsets.

        q = x W_q (qk_dim),  k = x W_k (or k = x with key_projection=False),
        v_p = x W_v,p (value_dim each),  pi = partition(N)  [P, 2N-1],
        y = W_o sum_p sum_j a_ij pi_p(j - i) v_p,j

    embed_dim: model width. num_parts: P. qk_dim: width of the single head's queries and keys
    (default 64; equal to embed_dim when key_projection=False, since keys are the inputs).
    value_dim: width of each value stream (default embed_dim // P, so the P streams together are
    as wide as the model, like the heads of multi-head attention). activation: 'softmax' or
    'sigmoid'. partition: 'softmax' (learnable) or 'bernstein' (fixed), see ShatterPartition;
    partition_options are passed to it. Input [B, N, embed_dim], key_padding_mask [B, N] bool
    (True = takes part); output [B, N, embed_dim].
    """

    def __init__(self, embed_dim, num_parts=4, *, qk_dim=64, value_dim=None, key_projection=True,
                 activation="softmax", causal=False, partition="softmax", partition_options=None,
                 bias=True, device=None, dtype=None, process_group=None):
        super().__init__()
        # Not None: x is this rank's slice of a sequence sharded over the group, and the
        # attention runs sequence-parallel (longattn.distributed.shatter_attention).
        self.process_group = process_group
        if activation not in ("softmax", "sigmoid"):
            raise ValueError(f"Shatter: activation must be 'softmax' or 'sigmoid', got {activation!r}")
        for name, val in (("embed_dim", embed_dim), ("num_parts", num_parts), ("qk_dim", qk_dim)):
            if not isinstance(val, int) or val < 1:
                raise ValueError(f"Shatter: {name} must be an integer >= 1, got {val!r}")
        if value_dim is not None and (not isinstance(value_dim, int) or value_dim < 1):
            raise ValueError(f"Shatter: value_dim must be an integer >= 1 or None, got {value_dim!r}")
        kw = {"device": device, "dtype": dtype}
        if not key_projection:
            qk_dim = embed_dim
        value_dim = value_dim or max(1, embed_dim // num_parts)
        self.embed_dim, self.num_parts, self.qk_dim, self.value_dim = embed_dim, num_parts, qk_dim, value_dim
        self.activation, self.causal = activation, causal
        self.q_proj = nn.Linear(embed_dim, qk_dim, bias=bias, **kw)
        self.k_proj = nn.Linear(embed_dim, qk_dim, bias=bias, **kw) if key_projection else None
        self.v_proj = nn.Linear(embed_dim, num_parts * value_dim, bias=bias, **kw)
        self.out_proj = nn.Linear(value_dim, embed_dim, bias=bias, **kw)
        self.partition = ShatterPartition(num_parts, partition, **(partition_options or {}), **kw)

    def forward(self, x, key_padding_mask=None):
        if x.dim() != 3 or x.shape[2] != self.embed_dim:
            raise ValueError(f"Shatter: x must have shape [B, N, {self.embed_dim}], got {list(x.shape)}")
        B, N, _ = x.shape
        q = self.q_proj(x)
        k = self.k_proj(x) if self.k_proj is not None else x
        # [B, N, P*Dv] -> [B, P, N, Dv] as a strided view: the operator takes it without a copy.
        v = self.v_proj(x).view(B, N, self.num_parts, self.value_dim).transpose(1, 2)
        if self.process_group is not None:
            from .. import distributed as ld
            pi = self.partition(ld.sequence_length(N, self.process_group)).to(device=x.device, dtype=x.dtype)
            o = ld.shatter_attention(q, k, v, pi, activation=self.activation, causal=self.causal,
                                     key_padding_mask=key_padding_mask, group=self.process_group)
            return self.out_proj(o)
        pi = self.partition(N).to(device=x.device, dtype=x.dtype)  # a fixed partition has no weight to place it
        o = shatter_attention(q, k, v, pi, activation=self.activation, causal=self.causal,
                              key_padding_mask=key_padding_mask)
        return self.out_proj(o)
