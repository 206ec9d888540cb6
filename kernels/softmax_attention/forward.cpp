// Forward of fused exact softmax attention (FlashAttention-style online softmax).
//
// Work items are (batch, head, query block), so B = 1 with a few heads still fills every
// thread. Each item packs its queries transposed once, then walks the key blocks: the score
// tile S^T = K Q^T (keys as rows, queries along the vector lanes) by the block GEMM with the
// bias and masks applied in its epilogue, the online softmax per query, and O += P V.
// Online softmax: the first block (and any block whose logits outgrow the reference) takes the
// classic path: column max, rescale of l and O, exp2 pass. Every other block keeps the previous
// reference, so its probabilities and their sums come straight out of the GEMM epilogue.
// No N x N buffer exists.
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

// A tile's probabilities against a stale reference may sum to at most 2^32 per query: then
// l and O stay far from float overflow (for |v| < 2^76 even at N = 2^20).
constexpr double kMaxTileSum = 4294967296.0;

// Per-thread scratch: the score tile, the output accumulator and the running statistics:
// per query, the reference exponent `ref` (base 2; -inf before any key) against which the
// sum l and the accumulator O are kept, so lse = ref + log2(l).
template <class T>
struct ForwardScratch {
  AlignedBuffer<T> Qt, St, O, ref, l, shift, alpha, sum;
  void reserve(int64_t BQ, int64_t D, int64_t Dv) {
    Qt.resize(D * BQ);
    St.resize(sa::kBlockK * BQ);
    O.resize(BQ * Dv);
    for (auto* v : {&ref, &l, &shift, &alpha, &sum}) v->resize(BQ);
  }
};

}  // namespace

template <class T>
void softmax_attention_forward(const SoftmaxAttentionParams<T>& p, BHND<T> out, T* lse) {
  const int64_t B = p.q.B, H = p.q.H, Nq = p.q.N, Nk = p.k.N, D = p.q.D, Dv = p.v.D;
  if (B == 0 || H == 0 || Nq == 0) return;
  const int64_t BQ = sa::query_block(p.causal);
  const int64_t nqb = ceil_div(Nq, BQ), nkb = ceil_div(Nk, sa::kBlockK);
  const sa::KeyMask<T> mask(p.key_padding_mask, p.mask_stride_b, B, Nk, sa::kBlockK);
  const T qk_scale = T(p.scale * sa::kLog2e);

  const int threads = resolve_threads(p.threads);
  std::vector<ForwardScratch<T>> scratch(static_cast<size_t>(threads));

  const std::vector<T> rbias = sa::reversed_bias(p.rel_bias, p.rel_bias_stride_h, H, Nq);
  const int64_t ld = BQ;  // row stride of Q^T and of the score tile

  parallel_for(B * H * nqb, threads, [&](int64_t item) {
    const int64_t qb = item % nqb, h = (item / nqb) % H, b = item / (nqb * H);
    const int64_t i0 = qb * BQ, ni = std::min(BQ, Nq - i0);
    ForwardScratch<T>& ws = scratch[static_cast<size_t>(thread_index())];
    ws.reserve(BQ, D, Dv);
    T *Qt = ws.Qt.data(), *St = ws.St.data(), *O = ws.O.data(), *ref = ws.ref.data(),
      *l = ws.l.data(), *shift = ws.shift.data(), *alpha = ws.alpha.data(), *sum = ws.sum.data();
    for (int64_t c = 0; c < ni; ++c) {
      const T* q = p.q.row(b, h, i0 + c);
      for (int64_t d = 0; d < D; ++d) Qt[d * ld + c] = q[d];
    }
    std::fill_n(O, ni * Dv, T(0));
    std::fill_n(ref, ni, T(-INFINITY));
    std::fill_n(l, ni, T(0));
    bool all_started = false;  // every query of the block has a finite reference
    const T* rb_h = rbias.empty() ? nullptr : rbias.data() + h * (2 * Nq - 1);

    for (int64_t kb = 0; kb < nkb; ++kb) {
      const sa::Tile t{i0, ni, kb * sa::kBlockK, std::min(sa::kBlockK, Nk - kb * sa::kBlockK)};
      if (p.causal && !t.causal_any_allowed()) break;  // later blocks lie further right
      const sa::BlockMask bm = mask.block(b, kb);
      if (bm == sa::BlockMask::kAll) continue;

      const sa::ScoreInputs<T> in{p.k.row(b, h, t.j0), p.k.sn, Qt, D, qk_scale, rb_h, Nq,
                                  bm == sa::BlockMask::kSome ? mask.add_row(b) : nullptr,
                                  p.causal};
      const T* v = p.v.row(b, h, t.j0);
      // O[i, :] += sum_j P[i, j] V[j, :], reading P through the transposed tile; guarded where
      // causal masking cuts the tile and a value is inf or NaN (kernels/common/guarded_products.h).
      const bool guarded = p.causal && t.causal_any_forbidden() && !rows_finite(v, t.nj, p.v.sn, Dv);
      auto accumulate_pv = [&] {
        if (guarded) guarded_weighted_sum(ni, t.nj, Dv, St, ld, int64_t(1), v, p.v.sn, O, Dv);
        else block_gemm(ni, Dv, t.nj, T(1), St, 1, ld, v, p.v.sn, true, O, Dv);
      };
      if (all_started) {
        // Fast path: probabilities against the current references, straight from the GEMM
        // epilogue. Any reference gives the exact softmax; it only has to keep the values
        // (and so l and O) from overflowing, which is checked, and the tile redone otherwise.
        std::fill_n(sum, ni, T(0));
        sa::score_tile(St, ld, t, in, sa::ScoreOutputs<T>{nullptr, ref, sum});
        bool fits = true;
        for (int64_t c = 0; c < ni; ++c) fits &= sum[c] <= T(kMaxTileSum);
        if (fits) {
          for (int64_t c = 0; c < ni; ++c) l[c] += sum[c];
          accumulate_pv();
          continue;
        }
      }
      // Slow path: the logits and their column max first, then each reference moves to the
      // new running max (l and O rescaled), and the probabilities follow.
      std::copy_n(ref, ni, shift);  // the column max starts from the running max
      sa::score_tile(St, ld, t, in, sa::ScoreOutputs<T>{shift, nullptr, nullptr});
      all_started = true;
      for (int64_t c = 0; c < ni; ++c) {
        const T m_new = shift[c];
        // No allowed key so far: ref stays -inf; shift by 0 so exp2 gives 0, not NaN.
        shift[c] = m_new == T(-INFINITY) ? T(0) : m_new;
        alpha[c] = ref[c];
        ref[c] = m_new;
        all_started &= m_new != T(-INFINITY);
      }
      simd::exp2_columns(alpha, 0, 1, ni, shift, static_cast<T*>(nullptr));  // 2^(old - new)
      for (int64_t c = 0; c < ni; ++c) {
        l[c] *= alpha[c];
        if (alpha[c] != T(1))
          for (int64_t e = 0; e < Dv; ++e) O[c * Dv + e] *= alpha[c];
      }
      simd::exp2_columns(St, ld, t.nj, ni, shift, l);
      accumulate_pv();
    }

    T* lse_row = lse + (b * H + h) * Nq;
    for (int64_t r = 0; r < ni; ++r) {
      T* o = out.row(b, h, i0 + r);
      if (l[r] == T(0)) {  // no key takes part
        std::fill_n(o, Dv, T(0));
        lse_row[i0 + r] = T(-INFINITY);
        continue;
      }
      const T inv = T(1) / l[r];
      for (int64_t c = 0; c < Dv; ++c) o[c] = O[r * Dv + c] * inv;
      lse_row[i0 + r] = T((double(ref[r]) + std::log2(double(l[r]))) * sa::kLn2);
    }
  });
}

template void softmax_attention_forward<float>(const SoftmaxAttentionParams<float>&, BHND<float>,
                                               float*);
template void softmax_attention_forward<double>(const SoftmaxAttentionParams<double>&,
                                                BHND<double>, double*);

LONGATTN_ISA_END
}  // namespace longattn::kernels
