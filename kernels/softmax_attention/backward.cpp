// Backward of fused exact softmax attention by recomputation (FlashAttention-2 style):
// P is rebuilt tile by tile from the saved logsumexp, Di = rowsum(dO * O), dS = P * (dP - Di).
//
// Work items are (batch, head, key group): a key group is a fixed range of key blocks, and
// the item owns the dK / dV rows of its keys, its own dQ partial and its own rel_bias partial.
// For each key block it walks the query blocks and does the five GEMMs of a tile on transposed
// score tiles (keys as rows, queries along the lanes): S^T = K Q^T, dV += P^T dO,
// dP^T = V dO^T, dK += dS^T Q, dQ += dS K. The item packs Q^T and dO^T once. The partials are then
// summed in a fixed order, so the result is bit-identical whatever the thread count.
// The number of groups depends only on the shapes: 1 when B*H alone gives enough items.
#include <algorithm>
#include <cmath>

#include "kernels/common/parallel.h"
#include "kernels/common/simd.h"
#include "kernels/common/block_gemm.h"
#include "kernels/softmax_attention/softmax_attention.h"
#include "kernels/softmax_attention/tiles.h"

namespace longattn::kernels {
LONGATTN_ISA_BEGIN

namespace {
namespace sa = softmax_attention_detail;

// Work items wanted for load balance, independent of the thread count (determinism).
constexpr int64_t kTargetItems = 8;

template <class T>
struct BackwardScratch {
  AlignedBuffer<T> St, dSt, Qt, dOt, lse2, Di;
  void reserve(int64_t nqb, int64_t BQ, int64_t D, int64_t Dv) {
    St.resize(sa::kBlockK * BQ);
    dSt.resize(sa::kBlockK * BQ);
    Qt.resize(nqb * D * BQ);  // [query block][D][BQ]
    dOt.resize(nqb * Dv * BQ);
    lse2.resize(nqb * BQ);
    Di.resize(nqb * BQ);
  }
};

}  // namespace

template <class T>
void softmax_attention_backward(const SoftmaxAttentionParams<T>& p,
                                const SoftmaxAttentionGrads<T>& g) {
  const int64_t B = p.q.B, H = p.q.H, Nq = p.q.N, Nk = p.k.N, D = p.q.D, Dv = p.v.D;
  const int64_t nbias = p.rel_bias ? 2 * Nq - 1 : 0;
  if (g.grad_rel_bias) std::fill_n(g.grad_rel_bias, H * nbias, T(0));
  auto zero_rows = [](BHND<T> x, int64_t b, int64_t h, int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n) std::fill_n(x.row(b, h, n), x.D, T(0));
  };
  if (B == 0 || H == 0 || Nq == 0 || Nk == 0) {
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h) {
        zero_rows(g.grad_q, b, h, 0, Nq);
        zero_rows(g.grad_k, b, h, 0, Nk);
        zero_rows(g.grad_v, b, h, 0, Nk);
      }
    return;
  }

  const int64_t BQ = sa::query_block(p.causal);
  const int64_t nqb = ceil_div(Nq, BQ), nkb = ceil_div(Nk, sa::kBlockK);
  const int64_t blocks_per_group =
      ceil_div(nkb, std::min(nkb, ceil_div(kTargetItems, B * H)));
  const int64_t groups = ceil_div(nkb, blocks_per_group);  // none of them empty
  const sa::KeyMask<T> mask(p.key_padding_mask, p.mask_stride_b, B, Nk, sa::kBlockK);
  const T qk_scale = T(p.scale * sa::kLog2e), scale = T(p.scale);
  const bool want_bias = g.grad_rel_bias && p.rel_bias;

  // Partials: dQ for groups > 0 (group 0 accumulates straight into grad_q), and the bias
  // gradient of every item, both summed after the parallel loop in a fixed order.
  // Each item zeroes what it owns (in parallel): its dK / dV rows, its dQ destination and its
  // bias partial.
  AlignedBuffer<T> dq_part((groups - 1) * B * H * Nq * D);
  AlignedBuffer<T> bias_part(want_bias ? B * H * groups * nbias : 0);

  const int threads = resolve_threads(p.threads);
  std::vector<BackwardScratch<T>> scratch(static_cast<size_t>(threads));
  const std::vector<T> rbias = sa::reversed_bias(p.rel_bias, p.rel_bias_stride_h, H, Nq);
  const int64_t ld = BQ;  // row stride of the packed and score tiles

  parallel_for(B * H * groups, threads, [&](int64_t item) {
    const int64_t grp = item % groups, h = (item / groups) % H, b = item / (groups * H);
    BackwardScratch<T>& ws = scratch[static_cast<size_t>(thread_index())];
    ws.reserve(nqb, BQ, D, Dv);
    T *St = ws.St.data(), *dSt = ws.dSt.data(), *lse2 = ws.lse2.data(), *Di = ws.Di.data();
    const T* lse = g.lse + (b * H + h) * Nq;
    for (int64_t i = 0; i < Nq; ++i) {
      // Shift of row i in base 2; +inf for a row with no key, so exp2(s - shift) = 0.
      lse2[i] = lse[i] == T(-INFINITY) ? T(INFINITY) : lse[i] * T(sa::kLog2e);
      const T *o = g.out.row(b, h, i), *dout = g.grad_out.row(b, h, i);
      T di = 0;
      for (int64_t c = 0; c < Dv; ++c) di += o[c] * dout[c];
      Di[i] = di;
      T* qt = ws.Qt.data() + (i / BQ) * D * ld + i % BQ;
      T* dot = ws.dOt.data() + (i / BQ) * Dv * ld + i % BQ;
      const T* q = p.q.row(b, h, i);
      for (int64_t d = 0; d < D; ++d) qt[d * ld] = q[d];
      for (int64_t d = 0; d < Dv; ++d) dot[d * ld] = dout[d];
    }
    const T* rb_h = rbias.empty() ? nullptr : rbias.data() + h * (2 * Nq - 1);
    // Bias gradient partial, reversed like rb: index i - j + N - 1.
    T* rdb = want_bias ? bias_part.data() + ((b * H + h) * groups + grp) * nbias : nullptr;
    // dQ destination of this group: grad_q itself or a contiguous partial [Nq, D].
    T* dq = grp == 0 ? g.grad_q.row(b, h, 0) : dq_part.data() + (((grp - 1) * B + b) * H + h) * Nq * D;
    const int64_t dq_ld = grp == 0 ? g.grad_q.sn : D;
    for (int64_t i = 0; i < Nq; ++i) std::fill_n(dq + i * dq_ld, D, T(0));
    if (rdb) std::fill_n(rdb, nbias, T(0));

    const int64_t kb_begin = std::min(nkb, grp * blocks_per_group);
    const int64_t kb_end = std::min(nkb, (grp + 1) * blocks_per_group);
    zero_rows(g.grad_k, b, h, kb_begin * sa::kBlockK, std::min(Nk, kb_end * sa::kBlockK));
    zero_rows(g.grad_v, b, h, kb_begin * sa::kBlockK, std::min(Nk, kb_end * sa::kBlockK));
    for (int64_t kb = kb_begin; kb < kb_end; ++kb) {
      const int64_t j0 = kb * sa::kBlockK, nj = std::min(sa::kBlockK, Nk - j0);
      const sa::BlockMask bm = mask.block(b, kb);
      if (bm == sa::BlockMask::kAll) continue;  // these keys get no gradient
      const T* k = p.k.row(b, h, j0);
      const T* v = p.v.row(b, h, j0);
      T* dk = g.grad_k.row(b, h, j0);
      T* dv = g.grad_v.row(b, h, j0);
      // With causal masking, queries before j0 see none of these keys.
      const int64_t qb_begin = p.causal ? j0 / BQ : 0;
      for (int64_t qb = qb_begin; qb < nqb; ++qb) {
        const sa::Tile t{qb * BQ, std::min(BQ, Nq - qb * BQ), j0, nj};
        const int64_t ni = t.ni, i0 = t.i0;
        const T* Qt = ws.Qt.data() + qb * D * ld;
        const T* dOt = ws.dOt.data() + qb * Dv * ld;
        const sa::ScoreInputs<T> in{k, p.k.sn, Qt, D, qk_scale, rb_h, Nq,
                                    bm == sa::BlockMask::kSome ? mask.add_row(b) : nullptr,
                                    p.causal};
        sa::score_tile(St, ld, t, in, sa::ScoreOutputs<T>{nullptr, lse2 + i0, nullptr});  // P^T
        auto add_bias_grad = [&] {  // (i, j) feeds the bias at j - i + N - 1, reversed: i - j + N - 1
          if (!rdb) return;
          for (int64_t r = 0; r < nj; ++r) {
            const T* ds = dSt + r * ld;
            T* db = rdb + (i0 - (j0 + r) + Nq - 1);
            for (int64_t c = 0; c < ni; ++c) db[c] += ds[c];
          }
        };
        const sa::TileRows<T> rows{p.q.row(b, h, i0), k, v, g.grad_out.row(b, h, i0),
                                   p.q.sn, p.k.sn, p.v.sn, g.grad_out.sn};
        // Where causal masking cuts the tile and a row holds inf or NaN: the guarded products,
        // which skip the pairs with P = 0 (kernels/common/guarded_products.h).
        const bool guarded = p.causal && t.causal_any_forbidden() &&
                             !(rows_finite(k, nj, p.k.sn, D) && rows_finite(v, nj, p.v.sn, Dv) &&
                               rows_finite(rows.q, ni, p.q.sn, D) &&
                               rows_finite(rows.dout, ni, g.grad_out.sn, Dv));
        if (guarded) {
          sa::guarded_grad_tile(t, D, Dv, St, ld, rows, Di + i0, scale, dSt, dk, g.grad_k.sn, dv,
                                g.grad_v.sn, dq + i0 * dq_ld, dq_ld);
          add_bias_grad();
          continue;
        }
        // dV[j, :] += sum_i P[i, j] dO[i, :]
        block_gemm(nj, Dv, ni, T(1), St, ld, 1, g.grad_out.row(b, h, i0), g.grad_out.sn, true,
                       dv, g.grad_v.sn);
        sa::grad_score_tile(dSt, ld, t, v, p.v.sn, dOt, Dv, St, Di + i0);  // dS^T
        add_bias_grad();
        // dK[j, :] += scale * sum_i dS[i, j] Q[i, :];  dQ[i, :] += scale * sum_j dS[i, j] K[j, :]
        block_gemm(nj, D, ni, scale, dSt, ld, 1, p.q.row(b, h, i0), p.q.sn, true, dk,
                       g.grad_k.sn);
        block_gemm(ni, D, nj, scale, dSt, 1, ld, k, p.k.sn, true, dq + i0 * dq_ld, dq_ld);
      }
    }
  });

  if (groups > 1)  // grad_q += partials of groups 1.., in group order
    parallel_for(B * H, threads, [&](int64_t bh) {
      const int64_t b = bh / H, h = bh % H;
      for (int64_t grp = 1; grp < groups; ++grp) {
        const T* part = dq_part.data() + (((grp - 1) * B + b) * H + h) * Nq * D;
        for (int64_t i = 0; i < Nq; ++i) {
          T* dst = g.grad_q.row(b, h, i);
          for (int64_t c = 0; c < D; ++c) dst[c] += part[i * D + c];
        }
      }
    });
  if (want_bias)  // grad_rel_bias[h] = sum over b, then groups, of the item partials
    parallel_for(H, threads, [&](int64_t h) {
      T* dst = g.grad_rel_bias + h * nbias;
      for (int64_t b = 0; b < B; ++b)
        for (int64_t grp = 0; grp < groups; ++grp) {
          const T* part = bias_part.data() + ((b * H + h) * groups + grp) * nbias;
          for (int64_t r = 0; r < nbias; ++r) dst[r] += part[nbias - 1 - r];  // un-reverse
        }
    });
}

template void softmax_attention_backward<float>(const SoftmaxAttentionParams<float>&,
                                                const SoftmaxAttentionGrads<float>&);
template void softmax_attention_backward<double>(const SoftmaxAttentionParams<double>&,
                                                 const SoftmaxAttentionGrads<double>&);

LONGATTN_ISA_END
}  // namespace longattn::kernels
