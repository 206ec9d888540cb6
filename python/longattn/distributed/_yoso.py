"""Sequence-parallel YOSO attention (LSH): the hash tables are sums over keys, so they are
all-reduced; nothing of size N travels.

Codes come from the single-process operator's hashing (_yoso_hash) on this rank's rows: each
(batch, head) draws its hash functions from (seed, b, h) alone and hashes every row on its own,
so a rank's codes are the rows of the whole sequence's codes. Per (b, h) and hash h, with
bucket c of the queries i and keys j whose code is c:
  forward   V_h[c] = sum_j v_j                     [2^tau, Dv]   Y_i = (1/m) sum_h V_h[code_i]
  backward  G_h[c] = sum_i g_i                     [2^tau, Dv]   dv_j = (1/m) sum_h G_h[code_j]
            K_h[c] = sum_j k^_j v_j^T              [2^tau, D, Dv]
            Q_h[c] = sum_i q^_i g_i^T              [2^tau, D, Dv]
            dq^_i = (tau/2m) sum_h K_h[code_i] g_i,  dk^_j = (tau/2m) sum_h Q_h[code_j] v_j
the paper's surrogate gradient (the same formula as the single-process backward='lsh'), then
through the L2 normalisation by autograd. Masked rows have code -1: a bucket of their own
that is emptied after the reduction, so they give and get nothing.
"""
import torch
import torch.distributed as dist
import torch.nn.functional as F

from ._comm import agree_on_length, group_info

__all__ = ["yoso_attention"]

_HASHING = {"gaussian": 0, "hadamard": 1}


def _tables(codes, rows, buckets, group):
    """[B, H, buckets, *row_shape] sums of rows [B, H, n, *row_shape] by codes [B, H, n] (-1 goes
    to bucket `buckets`, dropped), all-reduced over the group, with a zero row appended at
    index `buckets` so that gathering with code -1 gives zeros."""
    B, H, n = codes.shape
    rest = rows.shape[3:]
    idx = torch.where(codes < 0, torch.full_like(codes, buckets), codes).long()
    t = rows.new_zeros((B, H, buckets + 1) + rest)
    flat = t.view(B * H, buckets + 1, -1)
    src = rows.reshape(B * H, n, -1)
    flat.scatter_add_(1, idx.view(B * H, n, 1).expand(-1, -1, src.shape[-1]), src)
    t[:, :, buckets] = 0
    dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)
    return t


def _gather(table, codes):
    """table [B, H, buckets+1, *s] at codes [B, H, n] (-1 = the zero row) -> [B, H, n, *s]."""
    B, H, n = codes.shape
    nb = table.shape[2] - 1
    idx = torch.where(codes < 0, torch.full_like(codes, nb), codes).long()
    flat = table.reshape(B * H, nb + 1, -1)
    out = flat.gather(1, idx.view(B * H, n, 1).expand(-1, -1, flat.shape[-1]))
    return out.view((B, H, n) + table.shape[3:])


class YosoLSH(torch.autograd.Function):
    @staticmethod
    def forward(ctx, qh, kh, v, qc, kc, tau, group):
        m = qc.shape[3]
        y = torch.zeros(qh.shape[:3] + (v.shape[3],), dtype=v.dtype)
        for h in range(m):
            y += _gather(_tables(kc[..., h], v, 2 ** tau, group), qc[..., h])
        ctx.save_for_backward(qh, kh, v, qc, kc)
        ctx.args = (tau, group)
        return y / m

    @staticmethod
    def backward(ctx, g):
        qh, kh, v, qc, kc = ctx.saved_tensors
        tau, group = ctx.args
        m = qc.shape[3]
        g = g.contiguous()
        dq, dk, dv = torch.zeros_like(qh), torch.zeros_like(kh), torch.zeros_like(v)
        outer_k = kh.unsqueeze(-1) * v.unsqueeze(-2)  # [B, H, n, D, Dv]
        outer_q = qh.unsqueeze(-1) * g.unsqueeze(-2)
        for h in range(m):
            qch, kch = qc[..., h], kc[..., h]
            dv += _gather(_tables(qch, g, 2 ** tau, group), kch)
            K = _gather(_tables(kch, outer_k, 2 ** tau, group), qch)
            Q = _gather(_tables(qch, outer_q, 2 ** tau, group), kch)
            dq += (K * g.unsqueeze(-2)).sum(-1)
            dk += (Q * v.unsqueeze(-2)).sum(-1)
        s = tau / (2.0 * m)
        return dq * s, dk * s, dv / m, None, None, None, None


def yoso_attention(q, k, v, *, hash_bits, num_hashes, seed, key_padding_mask=None,
                   hashing="gaussian", backward="lsh", group=None):
    """longattn.yoso_attention (self-attention) on a sequence sharded over the ranks of `group`.

    q, k [B, H, n, D], v [B, H, n, Dv]: this rank's tokens; key_padding_mask [B, n] this rank's
    slice (it masks the queries too, as the single-process operator does when Nq == Nk).
    Returns this rank's [B, H, n, Dv], the same bits of hashing as the single-process operator.
    backward: "lsh" only (the all-pairs "exact" surrogate is not sequence-parallel).
    """
    if backward != "lsh":
        raise NotImplementedError('longattn.distributed.yoso_attention: only backward="lsh" is '
                                  f'sequence-parallel; got "{backward}"')
    if hashing not in _HASHING:
        raise ValueError('longattn.distributed.yoso_attention: hashing must be "gaussian" or '
                         f'"hadamard"; got "{hashing}"')
    if q.dim() != 4 or k.shape != q.shape or v.dim() != 4 or v.shape[:3] != q.shape[:3]:
        raise ValueError("longattn.distributed.yoso_attention: expected q, k [B, H, n, D] and v "
                         f"[B, H, n, Dv] of this rank's n tokens; got q {list(q.shape)}, k "
                         f"{list(k.shape)}, v {list(v.shape)}")
    if not 1 <= hash_bits <= 16:
        raise ValueError("longattn.distributed.yoso_attention: the all-reduced tables have 2^hash_bits "
                         f"buckets; expected 1 <= hash_bits <= 16, got {hash_bits}")
    rank, P = group_info(group)
    B, H, n, D = q.shape
    mask = key_padding_mask
    if mask is not None and (mask.dtype != torch.bool or tuple(mask.shape) != (B, n)):
        raise ValueError(f"longattn.distributed.yoso_attention: key_padding_mask must be this rank's "
                         f"slice, bool [{B}, {n}]; got {mask.dtype} {list(mask.shape)}")
    agree_on_length(n, (B, H, D, v.shape[3], hash_bits, num_hashes, seed), group, "yoso_attention")
    if mask is not None:
        keep = mask[:, None, :, None]
        q, k, v = q.masked_fill(~keep, 0), k.masked_fill(~keep, 0), v.masked_fill(~keep, 0)
    with torch.no_grad():
        qc, kc = torch.ops.longattn._yoso_hash(q.detach(), k.detach(), mask, hash_bits, num_hashes,
                                               seed, _HASHING[hashing])
    qc, kc = qc.transpose(2, 3), kc.transpose(2, 3)  # [B, H, n, m]: hash h is [..., h]
    return YosoLSH.apply(F.normalize(q, dim=-1, eps=1e-12), F.normalize(k, dim=-1, eps=1e-12),
                         v, qc.contiguous(), kc.contiguous(), hash_bits, group)
