"""Process-group plumbing shared by the sequence-parallel operators.

Layout convention: a sequence of N tokens over P ranks; rank r holds the tokens
[r*L, min((r+1)*L, N)) with L = ceil(N/P) (the last ranks may hold fewer, even none).
Everything goes through torch.distributed (c10d): collectives and point-to-point messages of
the group; nothing here opens a transport of its own.
"""
import math

import torch
import torch.distributed as dist


def group_info(group):
    """(rank, world size) of this process in `group` (None = the default group)."""
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError("longattn.distributed: torch.distributed is not initialised; call "
                           "torch.distributed.init_process_group first (expected an initialised "
                           "default group, got none)")
    return dist.get_rank(group), dist.get_world_size(group)


def global_rank(group, r):
    """The default group's rank of rank r of `group` (what isend/irecv address)."""
    return r if group is None else dist.get_global_rank(group, r)


class Layout:
    """Sizes of the natural sharding of N tokens over P ranks."""

    def __init__(self, N, P):
        self.N, self.P = N, P
        self.L = max(1, math.ceil(N / P))

    def start(self, r):
        return min(r * self.L, self.N)

    def length(self, r):
        return max(0, min((r + 1) * self.L, self.N) - r * self.L)


def agree_on_length(n_local, signature, group, what):
    """The whole sequence's length N from every rank's local length, after checking that the
    ranks follow the layout convention and agree on `signature` (a tuple of small ints such as
    batch, heads and head_dim). Raises the same error on every rank (every rank sees the same
    gathered table), so a mismatch never leaves some ranks waiting."""
    rank, P = group_info(group)
    row = torch.tensor([n_local, *signature], dtype=torch.int64)
    table = [torch.empty_like(row) for _ in range(P)]
    dist.all_gather(table, row, group=group)
    table = torch.stack(table)
    N = int(table[:, 0].sum())
    lay = Layout(N, P)
    expected = [lay.length(r) for r in range(P)]
    if table[:, 0].tolist() != expected:
        raise ValueError(f"longattn.distributed.{what}: rank r must hold tokens [r*ceil(N/P), "
                         f"(r+1)*ceil(N/P)) of the N = {N} tokens, i.e. local lengths {expected}; "
                         f"got {table[:, 0].tolist()}")
    if not bool((table[:, 1:] == table[0, 1:]).all()):
        raise ValueError(f"longattn.distributed.{what}: every rank must pass the same "
                         f"(batch, heads, features, ...) {table[0, 1:].tolist()}; got "
                         f"{table[:, 1:].tolist()} by rank")
    return N


def ring_exchange(buf, group, rank, P):
    """Starts sending `buf` to the next rank and receiving the previous rank's buffer of the
    same shape; returns (received, wait) where wait() completes both. Posted before the
    compute that uses the current buffer so the message overlaps it."""
    recv = torch.empty_like(buf)
    ops = [dist.P2POp(dist.isend, buf, global_rank(group, (rank + 1) % P), group),
           dist.P2POp(dist.irecv, recv, global_rank(group, (rank - 1) % P), group)]
    reqs = dist.batch_isend_irecv(ops)

    def wait():
        for q in reqs:
            q.wait()
    return recv, wait


def pack(tensors):
    """One contiguous buffer of several same-dtype tensors (one message per ring step)."""
    return torch.cat([t.reshape(-1) for t in tensors])


def unpack(buf, shapes):
    out, o = [], 0
    for s in shapes:
        n = math.prod(s)
        out.append(buf[o:o + n].view(s))
        o += n
    return out


class AllReduceSum(torch.autograd.Function):
    """Sum over the ranks, differentiable: every rank's output is the same sum, so the gradient
    of each rank's input is the sum of every rank's output gradient."""

    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        y = x.clone()
        dist.all_reduce(y, op=dist.ReduceOp.SUM, group=group)
        return y

    @staticmethod
    def backward(ctx, g):
        g = g.contiguous().clone()
        dist.all_reduce(g, op=dist.ReduceOp.SUM, group=ctx.group)
        return g, None


def all_reduce_sum(x, group):
    return AllReduceSum.apply(x.contiguous(), group)


class AllGather(torch.autograd.Function):
    """[P, *x.shape] of every rank's x, differentiable (the gradient of rank r's x is the sum
    over ranks of the gradient of slot r)."""

    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        ctx.rank, P = group_info(group)
        parts = [torch.empty_like(x) for _ in range(P)]
        dist.all_gather(parts, x, group=group)
        return torch.stack(parts)

    @staticmethod
    def backward(ctx, g):
        g = g.contiguous().clone()
        dist.all_reduce(g, op=dist.ReduceOp.SUM, group=ctx.group)
        return g[ctx.rank], None


def all_gather(x, group):
    return AllGather.apply(x.contiguous(), group)


def all_reduce_max_routed(local_max, group):
    """The maximum over ranks of local_max (same shape on every rank), with its gradient routed
    to the first rank that attains it (as a max over the whole sequence would route it to its
    first arg-max). -inf where every rank has -inf."""
    rank, P = group_info(group)
    m = local_max.detach().clone()
    dist.all_reduce(m, op=dist.ReduceOp.MAX, group=group)
    attains = (local_max.detach() == m).to(torch.int64)
    # first attaining rank: ranks below this one that attain it too count against it
    table = torch.stack([torch.empty_like(attains) for _ in range(P)])
    dist.all_gather(list(table.unbind(0)), attains, group=group)
    first = (table.cumsum(0) == 1) & (table == 1)
    mine = first[rank] & torch.isfinite(m)
    routed = torch.where(mine, local_max - local_max.detach(), torch.zeros_like(local_max))
    return m + all_reduce_sum(routed, group)


def sequence_length(n_local, group=None):
    """N, the whole sequence's length: the sum of every rank's local length."""
    group_info(group)
    t = torch.tensor([n_local], dtype=torch.int64)
    dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)
    return int(t)
