// The two tile computations of the softmax attention kernels, built on the block GEMM: the
// score tile (logits with relative bias, key padding mask and causal mask, then either their
// column max or their probabilities) and the tile of logit gradients (blocking: blocks.h).
// With a vector level (float) that elementwise work runs in the GEMM's epilogue, on registers.
#pragma once
#include "kernels/common/isa_namespace.h"
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "kernels/common/block_gemm.h"
#include "kernels/common/guarded_products.h"
#include "kernels/common/scratch.h"
#include "kernels/common/simd.h"
#include "kernels/softmax_attention/blocks.h"

namespace longattn::kernels {
LONGATTN_ISA_BEGIN
namespace softmax_attention_detail {

// Score tiles are stored transposed: St[r][c] is key j0 + r against query i0 + c (row stride
// ld), so the softmax statistics of the queries run along the vector lanes.
//
// What a score tile needs besides K and Q^T: rb_h is this head's reversed base-2 bias (or
// nullptr), mask_add the additive key mask (0 / -inf per key, or nullptr).
template <class T>
struct ScoreInputs {
  const T* k;  // first key row of the tile
  int64_t k_sn;
  const T* Qt;  // [D][ld] packed queries of the tile
  int64_t D;
  T qk_scale;  // scale * log2(e)
  const T* rb_h;
  int64_t N;
  const T* mask_add;
  bool causal;
};

// What a score tile writes. Logits are qk_scale * K Q^T + bias, -inf for masked keys and where
// causal forbids j > i (base 2). Three modes:
//  - colmax only:            St = logits, colmax[c] = max(colmax[c], column max);
//  - shift only:             St = exp2(logits - shift[c])  (probabilities, backward);
//  - colmax, shift, colsum:  both: St = exp2(logits - shift[c]), colmax as above and
//                            colsum[c] += column sum of St (forward with a running shift).
template <class T>
struct ScoreOutputs {
  T* colmax = nullptr;
  const T* shift = nullptr;
  T* colsum = nullptr;
};

// Portable version: a GEMM, then passes over the tile.
template <class T>
void score_tile(T* St, int64_t ld, const Tile& t, const ScoreInputs<T>& in,
                const ScoreOutputs<T>& o) {
  block_gemm(t.nj, t.ni, in.D, in.qk_scale, in.k, in.k_sn, 1, in.Qt, ld, false, St, ld);
  const bool causal = in.causal && t.causal_any_forbidden();
  for (int64_t r = 0; r < t.nj; ++r) {
    T* s = St + r * ld;
    const int64_t j = t.j0 + r;
    if (in.mask_add && in.mask_add[j] != T(0)) {
      std::fill_n(s, t.ni, T(-INFINITY));
      continue;
    }
    if (in.rb_h) {
      const T* bp = in.rb_h + (t.i0 - j + in.N - 1);  // bp[c] is the bias of query i0 + c
      for (int64_t c = 0; c < t.ni; ++c) s[c] += bp[c];
    }
    if (causal) std::fill_n(s, std::clamp<int64_t>(j - t.i0, 0, t.ni), T(-INFINITY));
  }
  if (o.colmax) simd::column_max(St, ld, t.nj, t.ni, o.colmax);
  if (o.shift) simd::exp2_columns(St, ld, t.nj, t.ni, o.shift, o.colsum);
}

// Gradient of the logits, transposed like the score tile: dS^T = P^T * (V dO^T - Di), where
// Pt is the probability tile, dOt the packed [Dv][ld] output gradient of the tile's queries and
// Di[c] = rowsum(dO * O) of query i0 + c. Portable version: a GEMM, then one pass.
template <class T>
void grad_score_tile(T* dSt, int64_t ld, const Tile& t, const T* v, int64_t v_sn, const T* dOt,
                     int64_t Dv, const T* Pt, const T* Di) {
  block_gemm(t.nj, t.ni, Dv, T(1), v, v_sn, 1, dOt, ld, false, dSt, ld);
  for (int64_t r = 0; r < t.nj; ++r) {
    const T* pr = Pt + r * ld;
    T* ds = dSt + r * ld;
    for (int64_t c = 0; c < t.ni; ++c) ds[c] = pr[c] * (ds[c] - Di[c]);
  }
}

// The guarded backward of a tile that causal masking cuts while its rows hold inf or NaN
// (kernels/common/guarded_products.h says why): every product skips the pairs with P = 0.
// Row-major views of one tile's rows for the guarded backward.
template <class T>
struct TileRows {
  const T *q, *k, *v, *dout;
  int64_t q_sn, k_sn, v_sn, dout_sn;
};

// The backward products of one tile, skipping every pair with P = 0: dV += P^T dO,
// dS^T = P^T (V dO^T - Di) (0 where P = 0), dK += scale dS^T Q, dQ += scale dS K.
template <class T>
void guarded_grad_tile(const Tile& t, int64_t D, int64_t Dv, const T* Pt, int64_t ld,
                       const TileRows<T>& x, const T* Di, T scale, T* dSt, T* dk, int64_t dk_sn,
                       T* dv, int64_t dv_sn, T* dq, int64_t dq_ld) {
  for (int64_t r = 0; r < t.nj; ++r)
    for (int64_t c = 0; c < t.ni; ++c) {
      const T w = Pt[r * ld + c];
      T& ds = dSt[r * ld + c];
      ds = T(0);
      if (w == T(0)) continue;
      const T* dout = x.dout + c * x.dout_sn;
      const T* v = x.v + r * x.v_sn;
      T dp = 0;
      for (int64_t e = 0; e < Dv; ++e) {
        dv[r * dv_sn + e] += w * dout[e];
        dp += v[e] * dout[e];
      }
      ds = w * (dp - Di[c]);
      const T* q = x.q + c * x.q_sn;
      const T* k = x.k + r * x.k_sn;
      for (int64_t d = 0; d < D; ++d) {
        dk[r * dk_sn + d] += scale * ds * q[d];
        dq[c * dq_ld + d] += scale * ds * k[d];
      }
    }
}

#if defined(LONGATTN_SIMD_HAS_VECF)
// Float with a vector level (AVX-512 or AVX2): the same, fused into the GEMM's epilogue while
// the tile is in registers.
struct ScoreEpilogue {
  float* St;
  int64_t ld;
  float alpha;
  const float* bias0;     // bias of (r, c) at bias0[c - r], or nullptr
  const float* row_add;   // per row: 0, or -inf for a masked key; or nullptr
  bool causal;
  int64_t causal_shift;   // (r, c) is forbidden when c < r + causal_shift (j0 - i0)
  ScoreOutputs<float> out;

  LONGATTN_ALWAYS_INLINE void operator()(int64_t r, int64_t c, VecF::Reg x, VecF::Mask mask) const {
    x = VecF::mul(x, VecF::set1(alpha));
    if (bias0) x = VecF::add(x, VecF::load(bias0 + (c - r), mask));
    if (row_add) x = VecF::add(x, VecF::set1(row_add[r]));
    if (causal) x = VecF::fill_below(x, c, r + causal_shift, -INFINITY);
    if (out.colmax)
      VecF::store(out.colmax + c, VecF::max(VecF::load(out.colmax + c, mask), x), mask);
    if (out.shift) x = VecF::exp2(VecF::sub(x, VecF::load(out.shift + c, mask)));
    if (out.colsum) VecF::store(out.colsum + c, VecF::add(VecF::load(out.colsum + c, mask), x), mask);
    VecF::store(St + r * ld + c, x, mask);
  }
};

inline void score_tile(float* St, int64_t ld, const Tile& t, const ScoreInputs<float>& in,
                       const ScoreOutputs<float>& out) {
  const ScoreEpilogue epi{St,
                          ld,
                          in.qk_scale,
                          in.rb_h ? in.rb_h + (t.i0 - t.j0 + in.N - 1) : nullptr,
                          in.mask_add ? in.mask_add + t.j0 : nullptr,
                          in.causal && t.causal_any_forbidden(),
                          t.j0 - t.i0,
                          out};
  block_gemm_apply(t.nj, t.ni, in.D, in.k, in.k_sn, 1, in.Qt, ld, epi);
}

struct GradScoreEpilogue {
  float* dSt;
  const float* Pt;
  int64_t ld;
  const float* Di;
  LONGATTN_ALWAYS_INLINE void operator()(int64_t r, int64_t c, VecF::Reg x, VecF::Mask mask) const {
    const VecF::Reg p = VecF::load(Pt + r * ld + c, mask);
    const VecF::Reg d = VecF::load(Di + c, mask);
    VecF::store(dSt + r * ld + c, VecF::mul(p, VecF::sub(x, d)), mask);
  }
};

inline void grad_score_tile(float* dSt, int64_t ld, const Tile& t, const float* v, int64_t v_sn,
                            const float* dOt, int64_t Dv, const float* Pt, const float* Di) {
  block_gemm_apply(t.nj, t.ni, Dv, v, v_sn, 1, dOt, ld, GradScoreEpilogue{dSt, Pt, ld, Di});
}
#endif

}  // namespace softmax_attention_detail
LONGATTN_ISA_END
}  // namespace longattn::kernels
