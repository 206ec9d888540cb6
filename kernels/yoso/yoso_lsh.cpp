// YOSO by LSH cumulation: forward (bucket value sums gathered by queries) and the paper's
// surrogate backward estimated with the same buckets. Work is parallel over (b, h); within one
// (b, h) hashes, buckets and pairs are visited in a fixed order, so results do not depend on the
// thread count.
#include <algorithm>
#include <vector>

#include "kernels/common/blas.h"
#include "kernels/common/parallel.h"
#include "kernels/yoso/yoso_internal.h"

namespace longattn::kernels {
namespace {

using namespace yoso_detail;

constexpr int64_t kChunk = 128;  // rows gathered at once by the factored (GEMM) bucket path

// The buckets of one hash: rows of each side sorted by code. visit(qbegin, qend, kbegin, kend)
// is called for each code shared by at least one query and one key, in increasing code order.
struct Bucketing {
  std::vector<int32_t> qorder, korder, tmp, counts;
  Bucketing(int64_t Nq, int64_t Nk)
      : qorder(Nq), korder(Nk), tmp(std::max(Nq, Nk)), counts((1 << 16) + 1) {}

  template <class F>
  void for_each_shared_bucket(const int32_t* qc, int64_t Nq, const int32_t* kc, int64_t Nk,
                              int tau, F&& visit) {
    const int64_t nq = sort_by_code(qc, Nq, tau, qorder.data(), tmp.data(), counts.data());
    const int64_t nk = sort_by_code(kc, Nk, tau, korder.data(), tmp.data(), counts.data());
    int64_t i = 0, j = 0;
    while (i < nq && j < nk) {
      const int32_t cq = qc[qorder[i]], ck = kc[korder[j]];
      if (cq < ck) {
        while (i < nq && qc[qorder[i]] == cq) ++i;
      } else if (ck < cq) {
        while (j < nk && kc[korder[j]] == ck) ++j;
      } else {
        int64_t ie = i, je = j;
        while (ie < nq && qc[qorder[ie]] == cq) ++ie;
        while (je < nk && kc[korder[je]] == ck) ++je;
        visit(qorder.data() + i, qorder.data() + ie, korder.data() + j, korder.data() + je);
        i = ie;
        j = je;
      }
    }
  }
};

template <class T>
void zero_rows(const BHND<T>& x, int64_t b, int64_t h) {
  for (int64_t n = 0; n < x.N; ++n) std::fill(x.row(b, h, n), x.row(b, h, n) + x.D, T(0));
}

// Scratch of the factored path: gathered row chunks and the two D×Dv bucket matrices.
template <class T>
struct FactoredScratch {
  std::vector<T> a, c, out, mk, mq;
  FactoredScratch(int64_t D, int64_t Dv)
      : a(kChunk * D), c(kChunk * Dv), out(kChunk * D), mk(D * Dv), mq(D * Dv) {}
};

// One bucket's q̂/k̂ gradients by the factored form: Mk = Σ_j k̂_j v_jᵀ, Mq = Σ_i q̂_i g_iᵀ,
// ∂L/∂q̂_i += Mk g_i, ∂L/∂k̂_j += Mq v_j. Cost 2(a + b)·D·Dv, whatever the number of pairs.
template <class T>
void bucket_factored(const YosoParams<T>& p, const YosoGrads<T>& g, int64_t b, int64_t h,
                     const int32_t* qb, const int32_t* qe, const int32_t* kb, const int32_t* ke,
                     const T* inv_q, const T* inv_k, FactoredScratch<T>& s) {
  const int64_t D = p.q.D, Dv = p.v.D;
  // Σ over one side of (row scaled by inv) ⊗ (other tensor's row), chunk by chunk.
  auto outer_sum = [&](const int32_t* ib, const int32_t* ie, const BHND<const T>& x,
                       const T* inv, const BHND<const T>& y, T* M) {
    std::fill(M, M + D * Dv, T(0));
    for (const int32_t* c0 = ib; c0 < ie; c0 += kChunk) {
      const int64_t n = std::min<int64_t>(kChunk, ie - c0);
      for (int64_t r = 0; r < n; ++r) {
        const T* xr = x.row(b, h, c0[r]);
        const T* yr = y.row(b, h, c0[r]);
        for (int64_t d = 0; d < D; ++d) s.a[r * D + d] = xr[d] * inv[c0[r]];
        std::copy(yr, yr + Dv, s.c.data() + r * Dv);
      }
      gemm(true, false, D, Dv, n, T(1), s.a.data(), D, s.c.data(), Dv, T(1), M, Dv);
    }
  };
  // grad rows += (rows of y) · Mᵀ.
  auto apply = [&](const int32_t* ib, const int32_t* ie, const BHND<const T>& y, const T* M,
                   const BHND<T>& grad) {
    for (const int32_t* c0 = ib; c0 < ie; c0 += kChunk) {
      const int64_t n = std::min<int64_t>(kChunk, ie - c0);
      for (int64_t r = 0; r < n; ++r) {
        const T* yr = y.row(b, h, c0[r]);
        std::copy(yr, yr + Dv, s.c.data() + r * Dv);
      }
      gemm(false, true, n, D, Dv, T(1), s.c.data(), Dv, M, Dv, T(0), s.out.data(), D);
      for (int64_t r = 0; r < n; ++r) {
        T* gr = grad.row(b, h, c0[r]);
        for (int64_t d = 0; d < D; ++d) gr[d] += s.out[r * D + d];
      }
    }
  };
  outer_sum(kb, ke, p.k, inv_k, p.v, s.mk.data());
  outer_sum(qb, qe, p.q, inv_q, g.grad_out, s.mq.data());
  apply(qb, qe, g.grad_out, s.mk.data(), g.grad_q);
  apply(kb, ke, p.v, s.mq.data(), g.grad_k);
}

}  // namespace

template <class T>
void yoso_forward(const YosoParams<T>& p, const int32_t* q_codes, const int32_t* k_codes,
                  BHND<T> out) {
  const int64_t B = p.q.B, H = p.q.H, Nq = p.q.N, Nk = p.k.N, Dv = p.v.D, m = p.num_hashes;
  parallel_for(B * H, p.threads, [&](int64_t bh) {
    const int64_t b = bh / H, h = bh % H;
    zero_rows(out, b, h);
    Bucketing buckets(Nq, Nk);
    std::vector<T> acc(Dv);
    for (int64_t hh = 0; hh < m; ++hh) {
      const int32_t* qc = q_codes + (bh * m + hh) * Nq;
      const int32_t* kc = k_codes + (bh * m + hh) * Nk;
      buckets.for_each_shared_bucket(qc, Nq, kc, Nk, p.hash_bits,
          [&](const int32_t* qb, const int32_t* qe, const int32_t* kb, const int32_t* ke) {
            std::fill(acc.begin(), acc.end(), T(0));
            for (const int32_t* j = kb; j < ke; ++j) {
              const T* vr = p.v.row(b, h, *j);
              for (int64_t d = 0; d < Dv; ++d) acc[d] += vr[d];
            }
            for (const int32_t* i = qb; i < qe; ++i) {
              T* o = out.row(b, h, *i);
              for (int64_t d = 0; d < Dv; ++d) o[d] += acc[d];
            }
          });
    }
    const T inv_m = T(1) / T(m);
    for (int64_t n = 0; n < Nq; ++n) {
      T* o = out.row(b, h, n);
      for (int64_t d = 0; d < Dv; ++d) o[d] *= inv_m;
    }
  });
}

template <class T>
void yoso_backward_lsh(const YosoParams<T>& p, const int32_t* q_codes, const int32_t* k_codes,
                       const YosoGrads<T>& g) {
  const int64_t B = p.q.B, H = p.q.H, Nq = p.q.N, Nk = p.k.N, D = p.q.D, Dv = p.v.D;
  const int64_t m = p.num_hashes;
  parallel_for(B * H, p.threads, [&](int64_t bh) {
    const int64_t b = bh / H, h = bh % H;
    zero_rows(g.grad_q, b, h);
    zero_rows(g.grad_k, b, h);
    zero_rows(g.grad_v, b, h);
    std::vector<T> inv_q(Nq), inv_k(Nk), gsum(Dv);
    inverse_norms(p.q, b, h, inv_q.data());
    inverse_norms(p.k, b, h, inv_k.data());
    Bucketing buckets(Nq, Nk);
    FactoredScratch<T> scratch(D, Dv);
    for (int64_t hh = 0; hh < m; ++hh) {
      const int32_t* qc = q_codes + (bh * m + hh) * Nq;
      const int32_t* kc = k_codes + (bh * m + hh) * Nk;
      buckets.for_each_shared_bucket(qc, Nq, kc, Nk, p.hash_bits,
          [&](const int32_t* qb, const int32_t* qe, const int32_t* kb, const int32_t* ke) {
            // ∂L/∂v_j gets the sum of the bucket's query gradients.
            std::fill(gsum.begin(), gsum.end(), T(0));
            for (const int32_t* i = qb; i < qe; ++i) {
              const T* gr = g.grad_out.row(b, h, *i);
              for (int64_t d = 0; d < Dv; ++d) gsum[d] += gr[d];
            }
            for (const int32_t* j = kb; j < ke; ++j) {
              T* gv = g.grad_v.row(b, h, *j);
              for (int64_t d = 0; d < Dv; ++d) gv[d] += gsum[d];
            }
            const int64_t na = qe - qb, nb = ke - kb;
            if (na * nb * (Dv + 2 * D) > 2 * (na + nb) * D * Dv) {
              bucket_factored(p, g, b, h, qb, qe, kb, ke, inv_q.data(), inv_k.data(), scratch);
              return;
            }
            for (const int32_t* i = qb; i < qe; ++i) {  // pairwise: s = g_iᵀv_j
              const T* gi = g.grad_out.row(b, h, *i);
              const T* qi = p.q.row(b, h, *i);
              T* dq = g.grad_q.row(b, h, *i);
              for (const int32_t* j = kb; j < ke; ++j) {
                const T* vj = p.v.row(b, h, *j);
                const T* kj = p.k.row(b, h, *j);
                T* dk = g.grad_k.row(b, h, *j);
                T s = 0;
                for (int64_t d = 0; d < Dv; ++d) s += gi[d] * vj[d];
                const T sq = s * inv_k[*j], sk = s * inv_q[*i];
                for (int64_t d = 0; d < D; ++d) dq[d] += sq * kj[d];
                for (int64_t d = 0; d < D; ++d) dk[d] += sk * qi[d];
              }
            }
          });
    }
    const T inv_m = T(1) / T(m), c = T(p.hash_bits) / T(2 * m);
    for (int64_t n = 0; n < Nk; ++n) {
      T* gv = g.grad_v.row(b, h, n);
      for (int64_t d = 0; d < Dv; ++d) gv[d] *= inv_m;
    }
    for (int64_t n = 0; n < Nq; ++n) {
      T* gq = g.grad_q.row(b, h, n);
      for (int64_t d = 0; d < D; ++d) gq[d] *= c;
      normalize_backward_row(p.q.row(b, h, n), inv_q[n], D, gq);
    }
    for (int64_t n = 0; n < Nk; ++n) {
      T* gk = g.grad_k.row(b, h, n);
      for (int64_t d = 0; d < D; ++d) gk[d] *= c;
      normalize_backward_row(p.k.row(b, h, n), inv_k[n], D, gk);
    }
  });
}

#define LONGATTN_YOSO_LSH(T)                                                                  \
  template void yoso_forward<T>(const YosoParams<T>&, const int32_t*, const int32_t*, BHND<T>); \
  template void yoso_backward_lsh<T>(const YosoParams<T>&, const int32_t*, const int32_t*,     \
                                     const YosoGrads<T>&);
LONGATTN_YOSO_LSH(float)
LONGATTN_YOSO_LSH(double)

}  // namespace longattn::kernels
