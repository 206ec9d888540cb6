"""Sequence-parallel Toeplitz product (FastRPB): y_i = sum_j coeffs[j - i + N - 1] x_j.

Choice (docs/distributed.md has the arithmetic): the blocks of x travel the ring and each rank
adds T_{r,s} x_s for every block s, T_{r,s} the n x n Toeplitz block whose [.., 2n-1]
coefficients are the slice at the blocks' offset difference, by the single-process operator
(FFT of size ~2n). Per rank this receives (P-1)/P of x (B*H*N*C values) forward, and x plus the
accumulated dx in the backward; compute is P products of n tokens (O(N C log n)), i.e. it is
not divided by P, but memory is (O(n C) per rank) and the messages overlap the products. A
distributed FFT of the 2N-padded sequence would cut compute to O(N C log N / P) but needs ~4
all-to-alls of 2N*C/P complex values (~16 N C / P real values) per rank each way: it moves
less than the ring only beyond P ~ 16, and it is not implemented. Causal runs on the mirrored
chunk layout of the ring attention (equal work per rank, blocks above the diagonal skipped).
"""
import torch
import torch.distributed as dist
import torch.nn.functional as F

from ._blocks import from_ring, to_ring
from ._comm import agree_on_length, group_info, pack, ring_exchange, unpack
from ._ring import bias_slice

__all__ = ["toeplitz_matmul"]

_PATHS = {"auto": 0, "direct": 1, "fft": 2}


class RingToeplitz(torch.autograd.Function):
    @staticmethod
    def forward(ctx, coeffs, x, n, starts, causal, path, group):
        rank, P = group_info(group)
        ys = [torch.zeros_like(t) for t in x.split(n, 2)]
        cur = x.contiguous()
        for t in range(P):
            src = (rank - t) % P
            if t < P - 1:
                recv, wait = ring_exchange(cur, group, rank, P)
            xb = cur.split(n, 2)
            for i, qs in enumerate(starts[rank]):
                for j, ks in enumerate(starts[src]):
                    if causal and ks > qs:
                        continue
                    c = bias_slice(coeffs, n, ks - qs).contiguous()
                    ys[i] += torch.ops.longattn._toeplitz_matmul_forward(c, xb[j], causal and ks == qs, path)
            if t < P - 1:
                wait()
                cur = recv
        ctx.save_for_backward(coeffs, x)
        ctx.args = (n, starts, causal, path, group)
        return torch.cat(ys, 2)

    @staticmethod
    def backward(ctx, gy):
        coeffs, x = ctx.saved_tensors
        n, starts, causal, path, group = ctx.args
        rank, P = group_info(group)
        want_c = ctx.needs_input_grad[0]
        gyb = gy.contiguous().split(n, 2)
        gc = torch.zeros_like(coeffs) if want_c else None
        cur = x.contiguous()
        acc = None
        for t in range(P):
            src = (rank - t) % P
            if t < P - 1:
                x_recv, x_wait = ring_exchange(cur, group, rank, P)
            if t >= 1:
                acc_recv, acc_wait = ring_exchange(acc, group, rank, P)
            xb = cur.split(n, 2)
            mine = torch.zeros_like(x)
            gxb = mine.split(n, 2)
            for i, qs in enumerate(starts[rank]):
                for j, ks in enumerate(starts[src]):
                    if causal and ks > qs:
                        continue
                    c = bias_slice(coeffs, n, ks - qs).contiguous()
                    gx, gcs = torch.ops.longattn._toeplitz_matmul_backward(
                        gyb[i], c, xb[j], causal and ks == qs, path, True, want_c)
                    gxb[j].add_(gx)
                    if want_c:
                        bias_slice(gc, n, ks - qs).add_(gcs)
            if t >= 1:
                acc_wait()
                mine += acc_recv
            acc = mine
            if t < P - 1:
                x_wait()
                cur = x_recv
        if P > 1:
            acc, wait = ring_exchange(acc, group, rank, P)
            wait()
        if want_c:
            dist.all_reduce(gc, op=dist.ReduceOp.SUM, group=group)
        return gc, acc, None, None, None, None, None


def toeplitz_matmul(coeffs, x, *, causal=False, path="auto", group=None):
    """longattn.toeplitz_matmul on a sequence sharded over the ranks of `group`.

    coeffs [H, 2N-1] whole, the same on every rank (its gradient is the whole sequence's, on
    every rank); x [B, H, n, C] this rank's tokens. Returns this rank's [B, H, n, C].
    """
    if path not in _PATHS:
        raise ValueError(f'longattn.distributed.toeplitz_matmul: path must be "auto", "fft" or '
                         f'"direct"; got "{path}"')
    rank, P = group_info(group)
    if x.dim() != 4 or coeffs.dim() != 2 or coeffs.shape[0] != x.shape[1]:
        raise ValueError("longattn.distributed.toeplitz_matmul: expected coeffs [H, 2N-1] and x "
                         f"[B, H, n, C]; got coeffs {list(coeffs.shape)}, x {list(x.shape)}")
    B, H, n_local, C = x.shape
    N = agree_on_length(n_local, (B, H, C, int(causal)), group, "toeplitz_matmul")
    if coeffs.shape[1] != 2 * N - 1:
        raise ValueError(f"longattn.distributed.toeplitz_matmul: coeffs must be the whole sequence's "
                         f"[{H}, {2 * N - 1}]; got {list(coeffs.shape)}")
    xr, n, starts = to_ring(x, 2, N, causal, group)
    total = P * len(starts[0]) * n
    cp = F.pad(coeffs.to(x.dtype), (total - N, total - N))
    y = RingToeplitz.apply(cp, xr, n, starts, causal, _PATHS[path], group)
    return from_ring(y, 2, N, causal, group)
