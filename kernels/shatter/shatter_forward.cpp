// Shatter forward: one work item per (batch, query block). For each key block the scores
// are one GEMM; the P value streams then each cost one GEMM of the weighted tile
// (A ⊙ Π_p) against V_p, where Π_p is the Toeplitz tile of partition row p. The GEMMs are the
// attention tile GEMM (kernels/common/block_gemm.h), which runs these small shapes at about
// twice OpenBLAS's speed here and is reentrant.
#include <algorithm>
#include <vector>

#include "kernels/common/block_gemm.h"
#include "kernels/common/guarded_products.h"
#include "kernels/common/parallel.h"
#include "kernels/shatter/shatter.h"
#include "kernels/shatter/shatter_tile.h"

namespace longattn::kernels {
LONGATTN_ISA_BEGIN

using namespace shatter_detail;

namespace {

// Scratch of one work item, allocated once per item.
template <class T>
struct ForwardScratch {
  std::vector<T> s, w, acc, m, l, key_bias, kt;
  ForwardScratch(int64_t D, int64_t Dv)
      : s(kBlockQ * kBlockK), w(kBlockQ * kBlockK), acc(kBlockQ * Dv), m(kBlockQ), l(kBlockQ),
        key_bias(kBlockK), kt(D * kBlockK) {}
};

// Turns the score tile into weights in place. Softmax: online update of the row max m and
// row sum l, rescaling acc; sigmoid: elementwise. Entries whose key does not take part
// become exactly 0.
template <class T>
void activate_tile(const ShatterParams<T>& p, int64_t i0, int64_t nq, int64_t j0, int64_t nk,
                   ForwardScratch<T>& sc, int64_t Dv) {
  const T* kb = sc.key_bias.data();
  for (int64_t ii = 0; ii < nq; ++ii) {
    T* __restrict row = sc.s.data() + ii * nk;
    const int64_t lim = causal_limit(p.causal, i0, ii, j0, nk);
    for (int64_t jj = lim; jj < nk; ++jj) row[jj] = neg_inf<T>();
    if (p.activation == ShatterActivation::sigmoid) {
      for (int64_t jj = 0; jj < lim; ++jj) row[jj] = kb[jj] == 0 ? sigmoid(row[jj]) : T(0);
      for (int64_t jj = lim; jj < nk; ++jj) row[jj] = 0;
      continue;
    }
    T mx = neg_inf<T>();
    for (int64_t jj = 0; jj < lim; ++jj) {
      row[jj] += kb[jj];
      mx = std::max(mx, row[jj]);
    }
    const T m_new = std::max(sc.m[ii], mx);
    if (m_new == neg_inf<T>()) {  // nothing taking part yet in this row
      for (int64_t jj = 0; jj < nk; ++jj) row[jj] = 0;
      continue;
    }
    T sum = 0;
    for (int64_t jj = 0; jj < nk; ++jj) {
      row[jj] = vexp(row[jj] - m_new);
      sum += row[jj];
    }
    const T alpha = vexp(sc.m[ii] - m_new);  // 0 when the row had nothing before
    sc.l[ii] = sc.l[ii] * alpha + sum;
    sc.m[ii] = m_new;
    if (alpha != T(1)) {
      T* acc = sc.acc.data() + ii * Dv;
      for (int64_t d = 0; d < Dv; ++d) acc[d] *= alpha;
    }
  }
}

template <class T>
void forward_item(const ShatterParams<T>& p, BHND<T> out, T* lse, int64_t b, int64_t i0,
                  int64_t nq, ForwardScratch<T>& sc) {
  const int64_t N = p.q.N, D = p.q.D, Dv = p.v.D, P = p.v.H;
  const uint8_t* mask_b = p.key_padding_mask ? p.key_padding_mask + b * p.mask_stride_b : nullptr;
  std::fill(sc.acc.begin(), sc.acc.end(), T(0));
  std::fill(sc.m.begin(), sc.m.end(), neg_inf<T>());
  std::fill(sc.l.begin(), sc.l.end(), T(0));
  const int64_t j_end = p.causal ? std::min(N, i0 + nq) : N;
  for (int64_t j0 = 0; j0 < j_end; j0 += kBlockK) {
    const int64_t nk = std::min(kBlockK, N - j0);
    bool any = false;
    for (int64_t jj = 0; jj < nk; ++jj) {
      const bool ok = key_ok(mask_b, j0 + jj);
      sc.key_bias[jj] = ok ? T(0) : neg_inf<T>();
      any |= ok;
    }
    if (!any) continue;
    pack_transposed(p.k.row(b, 0, j0), p.k.sn, nk, D, sc.kt.data());
    block_gemm(nq, nk, D, T(p.scale), p.q.row(b, 0, i0), p.q.sn, 1, sc.kt.data(), nk, false,
               sc.s.data(), nk);
    activate_tile(p, i0, nq, j0, nk, sc, Dv);
    for (int64_t pp = 0; pp < P; ++pp) {
      // W = A ⊙ Π_p: row ii reads partition offsets j0 - (i0 + ii) + jj, contiguous in jj.
      const T* part = p.partition + pp * p.partition_stride_p + (j0 - i0 + N - 1);
      for (int64_t ii = 0; ii < nq; ++ii) {
        const T* __restrict a = sc.s.data() + ii * nk;
        const T* __restrict pr = part - ii;
        T* __restrict w = sc.w.data() + ii * nk;
        for (int64_t jj = 0; jj < nk; ++jj) w[jj] = a[jj] * pr[jj];
      }
      // A tile cut by causal masking whose values hold inf or NaN: the product that skips the
      // zero weights (kernels/common/guarded_products.h).
      const T* v = p.v.row(b, pp, j0);
      if (p.causal && j0 + nk - 1 > i0 && !rows_finite(v, nk, p.v.sn, Dv))
        guarded_weighted_sum(nq, nk, Dv, sc.w.data(), int64_t(1), nk, v, p.v.sn, sc.acc.data(), Dv);
      else
        block_gemm(nq, Dv, nk, T(1), sc.w.data(), nk, 1, v, p.v.sn, true, sc.acc.data(), Dv);
    }
  }
  const bool softmax = p.activation == ShatterActivation::softmax;
  for (int64_t ii = 0; ii < nq; ++ii) {
    T* o = out.row(b, 0, i0 + ii);
    const T* acc = sc.acc.data() + ii * Dv;
    const T inv = !softmax ? T(1) : (sc.l[ii] > 0 ? T(1) / sc.l[ii] : T(0));
    for (int64_t d = 0; d < Dv; ++d) o[d] = acc[d] * inv;
    if (lse)
      lse[b * N + i0 + ii] =
          !softmax ? T(0) : (sc.l[ii] > 0 ? sc.m[ii] + std::log(sc.l[ii]) : neg_inf<T>());
  }
}

}  // namespace

template <class T>
void shatter_forward(const ShatterParams<T>& p, BHND<T> out, T* lse) {
  const int64_t B = p.q.B, N = p.q.N;
  const int64_t nqb = (N + kBlockQ - 1) / kBlockQ;
  parallel_for(B * nqb, p.threads, [&](int64_t item) {
    const int64_t b = item / nqb, i0 = (item % nqb) * kBlockQ;
    ForwardScratch<T> sc(p.q.D, p.v.D);
    forward_item(p, out, lse, b, i0, std::min(kBlockQ, N - i0), sc);
  });
}

template void shatter_forward<float>(const ShatterParams<float>&, BHND<float>, float*);
template void shatter_forward<double>(const ShatterParams<double>&, BHND<double>, double*);

LONGATTN_ISA_END
}  // namespace longattn::kernels
