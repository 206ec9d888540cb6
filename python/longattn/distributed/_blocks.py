"""Block layouts for the ring, and moving a sharded sequence between layouts.

Natural layout: rank r holds [r*L, min((r+1)*L, N)), L = ceil(N/P).
Ring layout, not causal: the natural slice padded at the sequence's end to L (one block).
Ring layout, causal: 2P chunks of h = ceil(N/(2P)) tokens; rank r holds chunks r and 2P-1-r
(mirrored), so every rank has the same number of (query, key) pairs below the diagonal:
with contiguous slices rank P-1 would do P times the work of rank 0. Positions >= N are
padding (masked keys, discarded queries). Blocks always start at their true global
positions, so relative offsets between blocks are the true ones.
"""
import math

import torch
import torch.distributed as dist

from ._comm import Layout, global_rank, group_info


def natural_intervals(N, P):
    lay = Layout(N, P)
    return [[(lay.start(r), lay.length(r))] for r in range(P)]


def ring_layout(N, P, causal):
    """(block length n, starts[r], intervals[r]) of the ring layout."""
    if not causal:
        L = Layout(N, P).L
        starts = [[r * L] for r in range(P)]
        return L, starts, [[(s, L) for s in st] for st in starts]
    h = max(1, -(-N // (2 * P)))
    starts = [[r * h, (2 * P - 1 - r) * h] for r in range(P)]
    return h, starts, [[(s, h) for s in st] for st in starts]


def _pieces(src_iv, dst_iv, N):
    """For every (source interval, destination interval) overlap inside [0, N): the source
    offset, destination offset and length, in a fixed order both ends agree on."""
    out = []
    so = 0
    for (s0, sl) in src_iv:
        do = 0
        for (d0, dl) in dst_iv:
            a, b = max(s0, d0), min(s0 + sl, d0 + dl, N)
            if a < b:
                out.append((so + a - s0, do + a - d0, b - a))
            do += dl
        so += sl
    return out


def reshard(x, dim, src, dst, N, group):
    """This rank's part of the sequence in layout `dst`, from its part `x` in layout `src`
    (lists of (start, length) per rank); positions >= N and absent ones are zeros."""
    rank, P = group_info(group)
    x = x.contiguous()
    shape = list(x.shape)
    shape[dim] = sum(l for _, l in dst[rank])
    y = x.new_zeros(shape)
    sends, recvs = [], []
    for peer in range(P):
        if peer == rank:
            for so, do, ln in _pieces(src[rank], dst[rank], N):
                y.narrow(dim, do, ln).copy_(x.narrow(dim, so, ln))
            continue
        out_p = _pieces(src[rank], dst[peer], N)
        if out_p:
            buf = torch.cat([x.narrow(dim, so, ln).reshape(-1) for so, _, ln in out_p])
            sends.append(dist.P2POp(dist.isend, buf, global_rank(group, peer), group))
        in_p = _pieces(src[peer], dst[rank], N)
        if in_p:
            per = math.prod(s for i, s in enumerate(x.shape) if i != dim)
            buf = x.new_empty(sum(ln for _, _, ln in in_p) * per)
            recvs.append((buf, in_p))
            sends.append(dist.P2POp(dist.irecv, buf, global_rank(group, peer), group))
    if sends:
        for q in dist.batch_isend_irecv(sends):
            q.wait()
    for buf, in_p in recvs:
        o = 0
        for _, do, ln in in_p:
            part = y.narrow(dim, do, ln)
            part.copy_(buf[o:o + part.numel()].view(part.shape))
            o += part.numel()
    return y


class Reshard(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dim, src, dst, N, group):
        ctx.args = (dim, src, dst, N, group)
        return reshard(x, dim, src, dst, N, group)

    @staticmethod
    def backward(ctx, g):
        dim, src, dst, N, group = ctx.args
        return reshard(g, dim, dst, src, N, group), None, None, None, None, None


def to_ring(x, dim, N, causal, group):
    """x in the natural layout -> (this rank's blocks concatenated, block length, starts)."""
    rank, P = group_info(group)
    n, starts, iv = ring_layout(N, P, causal)
    return Reshard.apply(x, dim, natural_intervals(N, P), iv, N, group), n, starts


def from_ring(y, dim, N, causal, group):
    rank, P = group_info(group)
    _, _, iv = ring_layout(N, P, causal)
    return Reshard.apply(y, dim, iv, natural_intervals(N, P), N, group)
