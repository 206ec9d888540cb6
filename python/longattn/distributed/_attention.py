"""Sequence-parallel softmax and Shatter attention: the ring of _ring.py on the layouts of
_blocks.py."""
import math

import torch
import torch.nn.functional as F

from ._blocks import from_ring, to_ring
from ._comm import agree_on_length, group_info
from ._ring import RingAttention, ShatterPair, SoftmaxPair

__all__ = ["softmax_attention", "shatter_attention"]


def _local_mask(mask, B, n, name):
    if mask is None:
        return None
    if mask.dtype != torch.bool or tuple(mask.shape) != (B, n):
        raise ValueError(f"longattn.distributed.{name}: key_padding_mask must be this rank's slice, "
                         f"bool [{B}, {n}]; got {mask.dtype} {list(mask.shape)}")
    return mask


def _ring_inputs(q, k, v, mask, dims, N, causal, group):
    """q, k, v and the key mask moved to the ring layout (padding keys masked)."""
    qd, kd, vd = dims
    B = q.shape[0]
    n_local = q.shape[qd]
    valid = torch.ones(B, n_local, dtype=q.dtype) if mask is None else mask.to(q.dtype)
    qr, n, starts = to_ring(q, qd, N, causal, group)
    kr, _, _ = to_ring(k, kd, N, causal, group)
    vr, _, _ = to_ring(v, vd, N, causal, group)
    mr, _, _ = to_ring(valid, 1, N, causal, group)
    return qr, kr, vr, mr > 0.5, n, starts


def _padded_bias(bias, N, total):
    """The [.., 2N-1] relative vector extended with zeros to [.., 2*total-1] (the extra offsets
    only ever pair a padding position)."""
    return F.pad(bias, (total - N, total - N))


def softmax_attention(q, k, v, *, causal=False, key_padding_mask=None, rel_bias=None, scale=None,
                      group=None):
    """longattn.softmax_attention on a sequence sharded over the ranks of `group` (ring attention).

    q [B, H, n, D], k [B, H, n, D], v [B, H, n, Dv]: this rank's tokens [r*ceil(N/P), ...) of the
    N-token sequence; key_padding_mask [B, n] this rank's slice; rel_bias [H, 2N-1] whole, the
    same on every rank (its gradient is the whole sequence's, on every rank). Returns this
    rank's [B, H, n, Dv], equal to the single-process operator's rows. Causal runs on mirrored
    chunk pairs for balance; the tokens go back to the natural layout before returning.
    """
    rank, P = group_info(group)
    if q.dim() != 4 or k.shape != q.shape or v.dim() != 4 or v.shape[:3] != q.shape[:3]:
        raise ValueError("longattn.distributed.softmax_attention: expected q, k [B, H, n, D] and v "
                         f"[B, H, n, Dv] of this rank's n tokens; got q {list(q.shape)}, k "
                         f"{list(k.shape)}, v {list(v.shape)}")
    B, H, n_local, D = q.shape
    mask = _local_mask(key_padding_mask, B, n_local, "softmax_attention")
    N = agree_on_length(n_local, (B, H, D, v.shape[3], int(causal), int(rel_bias is not None)),
                        group, "softmax_attention")
    if rel_bias is not None and tuple(rel_bias.shape) != (H, 2 * N - 1):
        raise ValueError(f"longattn.distributed.softmax_attention: rel_bias must be the whole "
                         f"sequence's [{H}, {2 * N - 1}]; got {list(rel_bias.shape)}")
    scale = 1.0 / math.sqrt(D) if scale is None else float(scale)
    qr, kr, vr, mr, n, starts = _ring_inputs(q, k, v, mask, (2, 2, 2), N, causal, group)
    bias = None
    if rel_bias is not None:
        bias = _padded_bias(rel_bias.to(q.dtype), N, P * len(starts[0]) * n)
    out = RingAttention.apply(qr, kr, vr, mr, bias, SoftmaxPair(scale), n, starts, causal, group)
    return from_ring(out, 2, N, causal, group)


def shatter_attention(q, k, v, partition, *, activation="softmax", causal=False,
                      key_padding_mask=None, scale=None, group=None):
    """longattn.shatter_attention on a sequence sharded over the ranks of `group`: the ring of
    softmax attention with the partition's [Pp, 2n-1] slices at the blocks' offsets.

    q, k [B, n, D], v [B, Pp, n, Dv]: this rank's tokens; partition [Pp, 2N-1] whole, the same on
    every rank (its gradient is the whole sequence's, on every rank); key_padding_mask [B, n].
    Returns this rank's [B, n, Dv].
    """
    if activation not in ("softmax", "sigmoid"):
        raise ValueError(f'longattn.distributed.shatter_attention: activation must be "softmax" or '
                         f'"sigmoid"; got "{activation}"')
    rank, P = group_info(group)
    if q.dim() != 3 or k.shape != q.shape or v.dim() != 4 or v.shape[0] != q.shape[0] \
            or v.shape[2] != q.shape[1] or partition.dim() != 2 or partition.shape[0] != v.shape[1]:
        raise ValueError("longattn.distributed.shatter_attention: expected q, k [B, n, D], v "
                         "[B, Pp, n, Dv] and partition [Pp, 2N-1]; got q "
                         f"{list(q.shape)}, k {list(k.shape)}, v {list(v.shape)}, partition "
                         f"{list(partition.shape)}")
    B, n_local, D = q.shape
    mask = _local_mask(key_padding_mask, B, n_local, "shatter_attention")
    N = agree_on_length(n_local, (B, D, v.shape[1], v.shape[3], int(causal)), group,
                        "shatter_attention")
    if partition.shape[1] != 2 * N - 1:
        raise ValueError(f"longattn.distributed.shatter_attention: partition must be the whole "
                         f"sequence's [{v.shape[1]}, {2 * N - 1}]; got {list(partition.shape)}")
    scale = 1.0 / math.sqrt(D) if scale is None else float(scale)
    qr, kr, vr, mr, n, starts = _ring_inputs(q, k, v, mask, (1, 1, 2), N, causal, group)
    part = _padded_bias(partition.to(q.dtype), N, P * len(starts[0]) * n)
    pair = ShatterPair(activation == "sigmoid", scale)
    out = RingAttention.apply(qr, kr, vr, mr, part, pair, n, starts, causal, group)
    return from_ring(out, 1, N, causal, group)
