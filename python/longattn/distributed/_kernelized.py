"""Sequence-parallel kernelized (linear) attention.

The definition is the single-process operator's (kernels/kernelized_attention/
kernelized_attention.h), stabilisers included, since eps makes the output depend on them:
  out_i = phi(q_i) e^{-c_i} . S_i / (phi(q_i) e^{-c_i} . s_i + eps),
  S_i = sum_j phi(k_j) e^{-R_i} v_j^T,  s_i = sum_j phi(k_j) e^{-R_i}
with c_i the query row's own maximum exponent and R_i the maximum exponent over every feature
of the keys that take part for query i: one constant per (b, h) when not causal, the running
maximum over keys j <= i when causal (elu/relu: every exponent is 0, or -inf for a masked key).

Not causal: every rank reduces its keys to sum_j phi(k_j) e^{c_j - R} [v_j, 1] (m x (Dv+1)
per (b, h)) with R agreed by an all-reduce (max) first; one all-reduce (sum) of those states.
Causal: every rank's total state relative to its own key maximum is all-gathered (P states of
m x (Dv+1), no serial chain through the ranks) and rank r takes the exclusive prefix over ranks
< r, rescaled to their common maximum; inside the rank, chunks of C tokens (masked C x C products)
and a running state, each chunk recomputed in the backward (activation checkpointing) so that
memory stays O(n (D + Dv)) and O(n / C) states, never O(n m Dv).
The whole computation is in torch with autograd (exact gradients through the maxima as well:
torch routes a max's gradient to its arg-max, as the single-process backward does).
"""
import math

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from ._comm import agree_on_length, all_gather, all_reduce_max_routed, all_reduce_sum, group_info

__all__ = ["kernelized_attention"]

NEG_INF = float("-inf")
CHUNK = 256


def _features(x, feature_map, projection):
    """(phi [.., n, m] scaled by e^{-c}, c [.., n]) of rows x [B, H, n, D]; c = 0 for elu/relu."""
    if feature_map == "elu":
        return F.elu(x) + 1, x.new_zeros(x.shape[:-1])
    if feature_map == "relu":
        return F.relu(x), x.new_zeros(x.shape[:-1])
    if feature_map == "sikf":
        u = x
        norm = 1.0
    else:  # favor
        omega = projection.to(x.dtype)
        u = (torch.einsum("bhnd,md->bhnm", x, omega) if omega.dim() == 2
             else torch.einsum("bhnd,hmd->bhnm", x, omega))
        u = u - 0.5 * (x * x).sum(-1, keepdim=True)
        norm = 1.0 / math.sqrt(omega.shape[-2])
    c = u.max(-1).values
    return torch.exp(u - c.unsqueeze(-1)) * norm, c


def _finite_or_zero(x):
    return torch.where(torch.isfinite(x), x, torch.zeros_like(x))


def _keys(k, mask, feature_map, projection):
    """Key features and exponents; a masked key has phi = 0 and exponent -inf."""
    phi, c = _features(k, feature_map, projection)
    if mask is not None:
        keep = mask[:, None, :]
        phi = phi * keep.unsqueeze(-1).to(phi.dtype)
        c = c.masked_fill(~keep, NEG_INF)
    return phi, c


def _anchor(q, k, v):
    """0, as a function of the inputs (their sums are 0 on a rank with no token)."""
    return 0 * (q.sum() + k.sum() + v.sum())


def _finish(num, den, eps):
    den = den + eps
    ok = den > 0
    return torch.where(ok.unsqueeze(-1), num / torch.where(ok, den, torch.ones_like(den)).unsqueeze(-1),
                       torch.zeros_like(num))


def _state(k, v, mask, ref, feature_map, projection):
    """sum_j phi(k_j) e^{c_j - ref} [v_j, 1] -> [B, H, m, Dv+1] (ref finite or 0)."""
    phi, c = _keys(k, mask, feature_map, projection)
    w = phi * torch.exp(c - ref.unsqueeze(-1)).unsqueeze(-1)
    vaug = torch.cat([v, v.new_ones(v.shape[:-1] + (1,))], -1)
    return torch.einsum("bhnm,bhnd->bhmd", w, vaug)


def _chunk(q, k, v, mask, R, h_in, m_in, feature_map, projection, eps):
    """Outputs of one chunk of queries (causal) and the state after it.

    R [B, H, C]: the running maxima of the chunk's rows (0 where no key yet); h_in: the state
    of all earlier keys relative to m_in, the running maximum before the chunk (-inf, with
    h_in = 0, when there is none: it then weighs 0, never inf * 0)."""
    phq, _ = _features(q, feature_map, projection)
    phk, ck = _keys(k, mask, feature_map, projection)
    C = q.shape[2]
    future = torch.ones(C, C, dtype=torch.bool).triu(1)
    e = torch.exp((ck.unsqueeze(-2) - R.unsqueeze(-1)).masked_fill(future, NEG_INF))
    w = torch.einsum("bhim,bhjm->bhij", phq, phk) * e
    vaug = torch.cat([v, v.new_ones(v.shape[:-1] + (1,))], -1)
    numer = torch.einsum("bhij,bhjd->bhid", w, vaug)
    numer = numer + torch.einsum("bhim,bhmd->bhid", phq, h_in) * torch.exp(m_in.unsqueeze(-1) - R).unsqueeze(-1)
    m_out = R[..., -1]
    wk = phk * torch.exp(ck - m_out.unsqueeze(-1)).unsqueeze(-1)
    h_out = h_in * torch.exp(m_in - m_out)[..., None, None] + torch.einsum("bhjm,bhjd->bhmd", wk, vaug)
    return _finish(numer[..., :-1], numer[..., -1], eps), h_out


def _causal(q, k, v, mask, feature_map, projection, eps, group, chunk):
    rank, P = group_info(group)
    B, H, n, _ = q.shape
    _, ck = _keys(k, mask, feature_map, projection)
    if n > 0:
        run = torch.cummax(ck, dim=-1).values
        m_mine = run[..., -1]
    else:
        run = ck
        m_mine = q.new_full((B, H), NEG_INF)
    # Every rank's state relative to its own maximum; rank r sums those of ranks < r.
    ref = _finite_or_zero(m_mine)
    if n > 0:
        st = checkpoint(_state, k, v, mask, ref, feature_map, projection, use_reentrant=False)
    else:
        # no token here: a zero state that still hangs off the inputs, so that this rank's
        # backward runs the same collectives as the others'
        m = projection.shape[-2] if feature_map == "favor" else q.shape[-1]
        st = q.new_zeros(B, H, m, v.shape[-1] + 1) + _anchor(q, k, v)
    # One all-gather of [state, maximum] per rank, used by every rank (rank 0 with weights 0):
    # each rank must run the same collectives in its backward, in the same order.
    packed = torch.cat([st.flatten(-2), m_mine.unsqueeze(-1)], -1)
    gathered = all_gather(packed, group)                          # [P, B, H, m*(Dv+1)+1]
    states = gathered[..., :-1].view((P,) + tuple(st.shape))
    before = (torch.arange(P) < rank).view(P, 1, 1)
    maxima = gathered[..., -1].masked_fill(~before, NEG_INF)     # ranks >= r take no part
    m_prev = maxima.max(0).values
    scale = torch.exp(maxima - _finite_or_zero(m_prev))           # 0 for a rank with no key
    h = (states * scale[..., None, None]).sum(0)
    R = torch.maximum(m_prev.unsqueeze(-1), run)
    Rs = _finite_or_zero(R)
    outs = []
    m_in = m_prev  # -inf (no key yet) gives the empty state weight 0
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        mk = None if mask is None else mask[:, a:b]
        o, h = checkpoint(_chunk, q[:, :, a:b], k[:, :, a:b], v[:, :, a:b], mk, Rs[..., a:b], h, m_in,
                          feature_map, projection, eps, use_reentrant=False)
        outs.append(o)
        m_in = R[..., b - 1]
    if not outs:  # no token here; still a user of the gathered states, for the backward's collective
        return v.new_zeros(v.shape) + 0 * h.sum()
    return torch.cat(outs, 2)


def _non_causal(q, k, v, mask, feature_map, projection, eps, group):
    B, H, n, _ = q.shape
    _, ck = _keys(k, mask, feature_map, projection)
    local_max = ck.max(-1).values if n > 0 else q.new_full((B, H), NEG_INF) + _anchor(q, k, v)
    R = _finite_or_zero(all_reduce_max_routed(local_max, group))
    if n > 0:
        st = _state(k, v, mask, R, feature_map, projection)
    else:
        m = projection.shape[-2] if feature_map == "favor" else q.shape[-1]
        st = q.new_zeros(B, H, m, v.shape[-1] + 1) + _anchor(q, k, v)
    st = all_reduce_sum(st, group)
    phq, _ = _features(q, feature_map, projection)
    numer = torch.einsum("bhim,bhmd->bhid", phq, st)
    return _finish(numer[..., :-1], numer[..., -1], eps)


def kernelized_attention(q, k, v, *, feature_map, causal=False, key_padding_mask=None,
                         projection=None, eps=1e-6, rel_bias=None, group=None, chunk=CHUNK):
    """longattn.kernelized_attention on a sequence sharded over the ranks of `group`.

    q, k [B, H, n, D], v [B, H, n, Dv]: this rank's tokens; key_padding_mask [B, n] this rank's
    slice; projection (favor) the same on every rank. Returns this rank's [B, H, n, Dv].
    rel_bias (Luo et al.'s RPE) is not supported sequence-parallel yet: it raises.
    chunk: causal block length (the result does not depend on it beyond rounding).
    """
    if feature_map not in ("elu", "relu", "sikf", "favor"):
        raise ValueError(f'longattn.distributed.kernelized_attention: feature_map must be "elu", '
                         f'"relu", "sikf" or "favor"; got "{feature_map}"')
    if rel_bias is not None:
        raise NotImplementedError("longattn.distributed.kernelized_attention: rel_bias (Luo et al.'s "
                                  "RPE) is not sequence-parallel yet; expected rel_bias=None")
    if feature_map == "favor" and projection is None:
        raise ValueError("longattn.distributed.kernelized_attention: favor needs projection [m, D] or "
                         "[H, m, D]; got None")
    if q.dim() != 4 or k.shape != q.shape or v.dim() != 4 or v.shape[:3] != q.shape[:3]:
        raise ValueError("longattn.distributed.kernelized_attention: expected q, k [B, H, n, D] and v "
                         f"[B, H, n, Dv] of this rank's n tokens; got q {list(q.shape)}, k "
                         f"{list(k.shape)}, v {list(v.shape)}")
    B, H, n, D = q.shape
    mask = key_padding_mask
    if mask is not None and (mask.dtype != torch.bool or tuple(mask.shape) != (B, n)):
        raise ValueError(f"longattn.distributed.kernelized_attention: key_padding_mask must be this "
                         f"rank's slice, bool [{B}, {n}]; got {mask.dtype} {list(mask.shape)}")
    agree_on_length(n, (B, H, D, v.shape[3], int(causal)), group, "kernelized_attention")
    if mask is not None:  # a masked key takes part in nothing, whatever its values (NaN included)
        k = k.masked_fill(~mask[:, None, :, None], 0)
        v = v.masked_fill(~mask[:, None, :, None], 0)
    if causal:
        return _causal(q, k, v, mask, feature_map, projection, eps, group, chunk)
    return _non_causal(q, k, v, mask, feature_map, projection, eps, group)
