"""Ring attention over blocks of equal length, shared by softmax and Shatter attention.

Each rank holds `nb` query blocks and the matching key/value blocks, n tokens each, at known
global start positions (positions >= N are padding: masked keys, discarded queries). Key,
value and mask blocks travel around the ring (one message per step, posted before the step's
compute so that it overlaps it); each rank merges the partial results of its (query block,
visiting key block) pairs by log-sum-exp, using the internal forward op's lse. A pair's
relative bias is the [.., 2n-1] slice of the global vector at the blocks' offset difference.
The backward recomputes nothing: with the final output and lse, each pair's gradients are
exactly that pair's share of the whole gradient (P = exp(s - lse), Di = rowsum(dO * O)), so
dQ accumulates at home while dK/dV accumulators travel the ring behind the key blocks and
arrive home after P steps; the bias gradient is summed over ranks.
"""
import torch
import torch.distributed as dist

from ._comm import group_info, pack, unpack, ring_exchange


class SoftmaxPair:
    """Pair ops of softmax attention: q, k, v [B, H, n, D]; out [B, H, n, Dv]; lse [B, H, n]."""
    q_dim, k_dim, v_dim, out_dim = 2, 2, 2, 2
    normalised = True

    def __init__(self, scale):
        self.scale = scale

    def forward(self, q, k, v, mask, bias, causal):
        return torch.ops.longattn._softmax_attention_forward(q, k, v, mask, bias, causal, self.scale)

    def backward(self, g, q, k, v, out, lse, mask, bias, causal):
        return torch.ops.longattn._softmax_attention_backward(g, q, k, v, out, lse, mask, bias,
                                                               causal, self.scale)


class ShatterPair:
    """Pair ops of Shatter: q, k [B, n, D]; v [B, P, n, Dv]; partition slice [P, 2n-1];
    out [B, n, Dv]; lse [B, n] (softmax only; sigmoid weights are not normalised and add)."""
    q_dim, k_dim, v_dim, out_dim = 1, 1, 2, 1

    def __init__(self, sigmoid, scale):
        self.sigmoid, self.scale = sigmoid, scale
        self.normalised = not sigmoid

    def forward(self, q, k, v, mask, part, causal):
        return torch.ops.longattn._shatter_attention_forward(q, k, v, part, mask, self.sigmoid,
                                                             causal, self.scale)

    def backward(self, g, q, k, v, out, lse, mask, part, causal):
        return torch.ops.longattn._shatter_attention_backward(g, q, k, v, part, out, lse, mask,
                                                              self.sigmoid, causal, self.scale)


def bias_slice(bias, n, d):
    """[.., 2n-1] slice of a global [.., 2M-1] vector for blocks of n tokens whose key block
    starts d positions after the query block (offsets d-(n-1) .. d+n-1)."""
    M = (bias.shape[-1] + 1) // 2
    return bias[..., d + M - n: d + M + n - 1]


def _merge(acc_out, acc_lse, out, lse):
    new = torch.logaddexp(acc_lse, lse)
    finite = torch.isfinite(new)
    wa = torch.where(finite, torch.exp(acc_lse - new), torch.zeros_like(new))
    wb = torch.where(finite, torch.exp(lse - new), torch.zeros_like(new))
    return acc_out * wa.unsqueeze(-1) + out * wb.unsqueeze(-1), new


class RingAttention(torch.autograd.Function):
    """q, k, v: this rank's nb blocks of n tokens, concatenated along their sequence dims;
    mask [B, nb*n] bool; bias: the global relative vector padded to the blocks' total length
    (or None); starts[r] = the global starts of rank r's blocks. Returns this rank's output."""

    @staticmethod
    def forward(ctx, q, k, v, mask, bias, pair, n, starts, causal, group):
        rank, P = group_info(group)
        qb = q.split(n, pair.q_dim)
        shapes = [k.shape, v.shape, mask.shape]
        pkg = pack([k, v, mask.to(k.dtype)])
        outs = [None] * len(qb)
        lses = [None] * len(qb)
        for t in range(P):
            src = (rank - t) % P
            if t < P - 1:
                recv, wait = ring_exchange(pkg, group, rank, P)
            kk, vv, mm = unpack(pkg, shapes)
            kb, vb, mb = kk.split(n, pair.k_dim), vv.split(n, pair.v_dim), (mm > 0.5).split(n, 1)
            for i, qs in enumerate(starts[rank]):
                for j, ks in enumerate(starts[src]):
                    if causal and ks > qs:
                        continue
                    b = None if bias is None else bias_slice(bias, n, ks - qs)
                    o, lse = pair.forward(qb[i], kb[j], vb[j], mb[j], b, causal and ks == qs)
                    if outs[i] is None:
                        outs[i], lses[i] = o, lse
                    elif pair.normalised:
                        outs[i], lses[i] = _merge(outs[i], lses[i], o, lse)
                    else:
                        outs[i] = outs[i] + o
            if t < P - 1:
                wait()
                pkg = recv
        out = torch.cat(outs, pair.out_dim)
        lse = torch.cat(lses, pair.out_dim)  # sigmoid: unused by the backward, shaped as it expects
        ctx.save_for_backward(q, k, v, mask, bias, out, lse)
        ctx.args = (pair, n, starts, causal, group, bias is not None)
        return out

    @staticmethod
    def backward(ctx, gout):
        q, k, v, mask, bias, out, lse = ctx.saved_tensors
        pair, n, starts, causal, group, has_bias = ctx.args
        rank, P = group_info(group)
        gout = gout.contiguous()
        qb, gb, ob = q.split(n, pair.q_dim), gout.split(n, pair.out_dim), out.split(n, pair.out_dim)
        lb = [x.contiguous() for x in lse.split(n, pair.out_dim)]  # the ops read lse densely
        dq = [torch.zeros_like(x) for x in qb]
        dbias = torch.zeros_like(bias) if has_bias else None
        kv_shapes = [k.shape, v.shape, mask.shape]
        g_shapes = [k.shape, v.shape]
        kv = pack([k, v, mask.to(k.dtype)])
        acc = None  # dK/dV accumulated for the block held at the previous step
        for t in range(P):
            src = (rank - t) % P
            if t < P - 1:
                kv_recv, kv_wait = ring_exchange(kv, group, rank, P)
            if t >= 1:  # the previous holders' dK/dV of the block now held arrives meanwhile
                acc_recv, acc_wait = ring_exchange(acc, group, rank, P)
            kk, vv, mm = unpack(kv, kv_shapes)
            kb, vb, mb = kk.split(n, pair.k_dim), vv.split(n, pair.v_dim), (mm > 0.5).split(n, 1)
            mine = torch.zeros(sum(x.numel() for x in (k, v)), dtype=k.dtype)
            dk, dv = unpack(mine, g_shapes)
            dkb, dvb = dk.split(n, pair.k_dim), dv.split(n, pair.v_dim)
            for i, qs in enumerate(starts[rank]):
                for j, ks in enumerate(starts[src]):
                    if causal and ks > qs:
                        continue
                    b = None if bias is None else bias_slice(bias, n, ks - qs)
                    gq, gk, gv, gbias = pair.backward(gb[i], qb[i], kb[j], vb[j], ob[i], lb[i],
                                                      mb[j], b, causal and ks == qs)
                    dq[i] += gq
                    dkb[j].add_(gk)
                    dvb[j].add_(gv)
                    if has_bias:
                        bias_slice(dbias, n, ks - qs).add_(gbias)
            if t >= 1:
                acc_wait()
                mine += acc_recv
            acc = mine
            if t < P - 1:
                kv_wait()
                kv = kv_recv
        if P > 1:  # the last holder of each block hands its total home
            acc, wait = ring_exchange(acc, group, rank, P)
            wait()
        dk, dv = unpack(acc, g_shapes)
        if has_bias:
            dist.all_reduce(dbias, op=dist.ReduceOp.SUM, group=group)
        return (torch.cat(dq, pair.q_dim), dk, dv, None, dbias, None, None, None, None, None)
