// YOSO by LSH cumulation: forward (bucket value sums gathered by queries) and the paper's
// surrogate backward estimated with the same buckets.
//
// Memory layout, the thing that decides speed here: every hash visits rows in a new random order,
// so each row visit is a cache miss once a (b, h) outgrows the cache. Each (b, h) therefore copies
// its rows into per-thread "chunked" arrays, [feature chunk][row][chunk width] (zero-padded), and
// runs every pass chunk by chunk. The chunk width is the whole (padded) feature width when the
// arrays of a pass fit in kPassBytes, and shrinks to one cache line (16 floats, 8 doubles) for
// long sequences: a row visit is then one cache line, and one chunk's arrays (N × 64 B each: 4 MiB
// at N = 65536) stay in the last-level cache where whole rows (16 MiB per tensor) would not. The
// shared buckets of a group of hashes (all m unless that would exceed the scratch budgets) are
// listed once (SharedBuckets) and replayed for every chunk.
//
// Work is parallel over (b, h); within one (b, h) hashes, buckets, pairs and chunks are visited in
// a fixed order, so results do not depend on the thread count.
#include <algorithm>
#include <memory>
#include <type_traits>
#include <vector>

#include "kernels/common/blas.h"
#include "kernels/common/parallel.h"
#include "kernels/yoso/yoso_internal.h"

namespace longattn::kernels {
LONGATTN_ISA_BEGIN
namespace {

using namespace yoso_detail;

template <class T>
constexpr int64_t kCW = 64 / int64_t(sizeof(T));  // elements per chunk: one cache line
constexpr int64_t kPrefetch = 16;                  // rows ahead (in visiting order) to prefetch
constexpr int64_t kChunk = 128;                    // rows per GEMM in the factored bucket path

// Working-set budget of one pass over the chunked arrays (a share of the last-level cache).
constexpr int64_t kPassBytes = int64_t(8) << 20;

// Shape of a chunked array of `width` features over N rows: nc chunks of cw elements.
struct Chunking {
  int64_t width, N, cw, nc;
  int64_t size() const { return nc * N * cw; }
};
// The widest chunk (a multiple of one cache line) for which `arrays` arrays of N rows fit kPassBytes.
template <class T>
Chunking chunking(int64_t width, int64_t N, int arrays) {
  const int64_t line = kCW<T>, lines = (width + line - 1) / line;
  int64_t per = lines;
  while (per > 1 && arrays * N * per * line * int64_t(sizeof(T)) > kPassBytes) --per;
  const int64_t nc = (lines + per - 1) / per;
  return Chunking{width, N, per * line, nc};
}

// Chunked copy of the rows of x at (b, h), each scaled by scale[n] (nullptr: 1).
template <class T>
void pack_chunked(const BHND<const T>& x, int64_t b, int64_t h, const T* scale, const Chunking& c,
                  T* out) {
  for (int64_t n = 0; n < c.N; ++n) {
    const T* row = x.row(b, h, n);
    const T s = scale ? scale[n] : T(1);
    for (int64_t k = 0; k < c.nc; ++k) {
      T* o = out + (k * c.N + n) * c.cw;
      for (int64_t t = 0; t < c.cw; ++t) {
        const int64_t d = k * c.cw + t;
        o[t] = d < x.D ? row[d] * s : T(0);
      }
    }
  }
}

// Row n of a chunked array into dst (width elements), or the reverse (+=).
template <class T>
void gather_row(const T* X, const Chunking& c, int64_t n, T* dst) {
  for (int64_t d = 0; d < c.width; ++d) dst[d] = X[((d / c.cw) * c.N + n) * c.cw + d % c.cw];
}
template <class T>
void scatter_add_row(T* X, const Chunking& c, int64_t n, const T* src) {
  for (int64_t d = 0; d < c.width; ++d) X[((d / c.cw) * c.N + n) * c.cw + d % c.cw] += src[d];
}

// Whether a bucket of a queries and b keys takes the factored form Σ_j k̂_j v_jᵀ (D×Dv, cost
// 2(a+b)·D·Dv) rather than its pairs (cost a·b·(Dv + 2D)).
inline bool factored(int64_t a, int64_t b, int64_t D, int64_t Dv) {
  return a * b * (Dv + 2 * D) > 2 * (a + b) * D * Dv;
}

// The shared buckets of a group of consecutive hashes of one (b, h), in hash order and then code
// order: bucket u holds qn[u] queries and kn[u] keys, listed consecutively in qrows and krows;
// `pairs` counts the query-key pairs of the buckets that take the pairwise form.
struct SharedBuckets {
  std::vector<int32_t> qrows, krows, qn, kn;
  int64_t pairs = 0;
  std::vector<int32_t> qorder, korder, qsorted, ksorted, tmp_order, tmp_codes, counts;

  SharedBuckets(int64_t Nq, int64_t Nk)
      : qorder(Nq), korder(Nk), qsorted(Nq), ksorted(Nk), tmp_order(std::max(Nq, Nk)),
        tmp_codes(std::max(Nq, Nk)), counts((1 << 16) + 1) {}

  // Lists hashes from *next on, at least one, while the group stays within the rows and pairs
  // of group_budget(); advances *next past them. D, Dv decide which buckets count as pairwise.
  void next_group(const int32_t* q_codes, const int32_t* k_codes, int64_t m, int64_t Nq,
                  int64_t Nk, int tau, int64_t D, int64_t Dv, int64_t* next) {
    qrows.clear(), krows.clear(), qn.clear(), kn.clear();
    pairs = 0;
    do {
      append_hash(q_codes + *next * Nq, k_codes + *next * Nk, Nq, Nk, tau, D, Dv);
      ++*next;
    } while (*next < m && int64_t(qrows.size() + krows.size()) + Nq + Nk <= group_budget().rows &&
             pairs < group_budget().pairs);
  }

  void append_hash(const int32_t* qc, const int32_t* kc, int64_t Nq, int64_t Nk, int tau,
                   int64_t D, int64_t Dv) {
    const int64_t nq = sort_by_code(qc, Nq, tau, qorder.data(), qsorted.data(), tmp_order.data(),
                                    tmp_codes.data(), counts.data());
    const int64_t nk = sort_by_code(kc, Nk, tau, korder.data(), ksorted.data(), tmp_order.data(),
                                    tmp_codes.data(), counts.data());
    const int32_t* qs = qsorted.data();
    const int32_t* ks = ksorted.data();
    int64_t i = 0, j = 0;
    while (i < nq && j < nk) {
      const int32_t cq = qs[i], ck = ks[j];
      int64_t ie = i, je = j;
      if (cq <= ck)
        while (ie < nq && qs[ie] == cq) ++ie;
      if (ck <= cq)
        while (je < nk && ks[je] == ck) ++je;
      if (cq == ck) {
        qrows.insert(qrows.end(), qorder.begin() + i, qorder.begin() + ie);
        krows.insert(krows.end(), korder.begin() + j, korder.begin() + je);
        qn.push_back(int32_t(ie - i));
        kn.push_back(int32_t(je - j));
        if (!factored(ie - i, je - j, D, Dv)) pairs += (ie - i) * (je - j);
      }
      i = ie;
      j = je;
    }
  }
  int64_t size() const { return int64_t(qn.size()); }
};

// Prefetch the n elements at p (one line per 64 bytes).
template <class T>
inline void prefetch(const T* p, int64_t n) {
  for (int64_t i = 0; i < n; i += kCW<T>) __builtin_prefetch(p + i);
}

// Calls f(std::integral_constant<int64_t, W>) with W = cw when cw is one of the common widths
// (one cache line, or 64 elements), W = 0 (meaning: use cw at run time) otherwise, so the
// innermost loops usually have a compile-time trip count.
template <class T, class F>
void with_width(int64_t cw, F&& f) {
  if (cw == kCW<T>) return f(std::integral_constant<int64_t, kCW<T>>{});
  if (cw == 64) return f(std::integral_constant<int64_t, 64>{});
  f(std::integral_constant<int64_t, 0>{});
}

// One value chunk of the forward: each shared bucket's value sum is added to its queries.
template <int64_t W, class T>
void forward_pass(const SharedBuckets& sb, int64_t cw_rt, const T* vc, T* ac, T* sum_rt) {
  const int64_t cw = W ? W : cw_rt;
  alignas(64) T sum_w[W ? W : 1];  // in registers when the width is known
  T* sum = W ? sum_w : sum_rt;
  const int32_t* qr = sb.qrows.data();
  const int32_t* kr = sb.krows.data();
  const int32_t* qend = qr + sb.qrows.size();
  const int32_t* kend = kr + sb.krows.size();
  for (int64_t u = 0; u < sb.size(); ++u) {
    std::fill(sum, sum + cw, T(0));
    for (const int32_t* j = kr; j < kr + sb.kn[u]; ++j) {
      if (j + kPrefetch < kend) prefetch(vc + j[kPrefetch] * cw, cw);
      const T* vj = vc + *j * cw;
#pragma omp simd
      for (int64_t t = 0; t < cw; ++t) sum[t] += vj[t];
    }
    for (const int32_t* i = qr; i < qr + sb.qn[u]; ++i) {
      if (i + kPrefetch < qend) prefetch(ac + i[kPrefetch] * cw, cw);
      T* ai = ac + *i * cw;
#pragma omp simd
      for (int64_t t = 0; t < cw; ++t) ai[t] += sum[t];
    }
    kr += sb.kn[u];
    qr += sb.qn[u];
  }
}

}  // namespace

template <class T>
void yoso_forward(const YosoParams<T>& p, const int32_t* q_codes, const int32_t* k_codes,
                  BHND<T> out) {
  const int64_t B = p.q.B, H = p.q.H, Nq = p.q.N, Nk = p.k.N, Dv = p.v.D, m = p.num_hashes;
  const Chunking cv = chunking<T>(Dv, Nk, 2), ca{Dv, Nq, cv.cw, cv.nc};
  struct Scratch {
    HugePageBuffer<T> v, acc;
    std::vector<T> sum;
    SharedBuckets buckets;
    Scratch(const Chunking& cv_, const Chunking& ca_)
        : sum(cv_.cw), buckets(ca_.N, cv_.N) {
      v.resize(cv_.size());
      acc.resize(ca_.size());
    }
  };
  const int threads = threads_for(p.threads, B * H, 2.0 * B * H * m * (Nq + Nk) * Dv);
  std::vector<std::unique_ptr<Scratch>> scratch;
  for (int t = 0; t < threads; ++t) scratch.push_back(std::make_unique<Scratch>(cv, ca));
  parallel_for(B * H, threads, [&](int64_t bh) {
    const int64_t b = bh / H, h = bh % H;
    Scratch& s = *scratch[thread_index()];
    SharedBuckets& sb = s.buckets;
    pack_chunked(p.v, b, h, static_cast<const T*>(nullptr), cv, s.v.data());
    std::fill(s.acc.data(), s.acc.data() + ca.size(), T(0));
    for (int64_t next = 0; next < m;) {
      sb.next_group(q_codes + bh * m * Nq, k_codes + bh * m * Nk, m, Nq, Nk, p.hash_bits, 0, Dv,
                    &next);
      for (int64_t c = 0; c < cv.nc; ++c)
        with_width<T>(cv.cw, [&](auto cw_const) {
          forward_pass<decltype(cw_const)::value, T>(sb, cv.cw, s.v.data() + c * Nk * cv.cw,
                                                   s.acc.data() + c * Nq * cv.cw, s.sum.data());
        });
    }
    const T inv_m = T(1) / T(m);
    for (int64_t n = 0; n < Nq; ++n) {
      T* o = out.row(b, h, n);
      gather_row(s.acc.data(), ca, n, o);
      for (int64_t d = 0; d < Dv; ++d) o[d] *= inv_m;
    }
  });
}

namespace {

// Chunk shapes of the backward: pass 1 walks g, v, ∂L/∂v (value width), pass 2 walks q̂, k̂,
// ∂L/∂q̂, ∂L/∂k̂ (key width).
struct BackwardShapes {
  Chunking g, v, q, k;
  BackwardShapes(int64_t Nq, int64_t Nk, int64_t D, int64_t Dv, Chunking cvv, Chunking cdd)
      : g{Dv, Nq, cvv.cw, cvv.nc}, v{Dv, Nk, cvv.cw, cvv.nc}, q{D, Nq, cdd.cw, cdd.nc},
        k{D, Nk, cdd.cw, cdd.nc} {}
};

// Per-thread scratch of the backward: chunked q̂, g (= ∂L/∂Y), k̂, v and the accumulators
// ∂L/∂q̂, ∂L/∂k̂, ∂L/∂v; the pair weights s = g_iᵀv_j of the pairwise buckets; factored-path
// gathers.
template <class T>
struct BackwardScratch {
  HugePageBuffer<T> q, g, k, v, dq, dk, dv;
  std::vector<T> inv_q, inv_k, pairs, gsum;
  std::vector<T> ra, rb, rout, mk, mq;
  SharedBuckets buckets;
  BackwardScratch(const BackwardShapes& c)
      : inv_q(c.q.N), inv_k(c.k.N), gsum(c.g.cw), ra(kChunk * c.q.width),
        rb(kChunk * c.v.width), rout(kChunk * c.q.width), mk(c.q.width * c.v.width),
        mq(c.q.width * c.v.width), buckets(c.q.N, c.k.N) {
    q.resize(c.q.size()), dq.resize(c.q.size()), g.resize(c.g.size());
    k.resize(c.k.size()), dk.resize(c.k.size()), v.resize(c.v.size()), dv.resize(c.v.size());
  }
};

// One factored bucket: Mk = Σ_j k̂_j v_jᵀ, Mq = Σ_i q̂_i g_iᵀ, ∂L/∂q̂_i += Mk g_i,
// ∂L/∂k̂_j += Mq v_j, rows gathered from and added back to the chunked arrays.
template <class T>
void bucket_factored(const BackwardShapes& c, const int32_t* qr, int64_t a, const int32_t* kr,
                     int64_t b, BackwardScratch<T>& s) {
  const int64_t D = c.q.width, Dv = c.v.width;
  auto outer_sum = [&](const int32_t* rows, int64_t n, const T* X, const Chunking& cx,
                       const T* Y, const Chunking& cy, T* M) {
    std::fill(M, M + D * Dv, T(0));
    for (int64_t r0 = 0; r0 < n; r0 += kChunk) {
      const int64_t nr = std::min(kChunk, n - r0);
      for (int64_t r = 0; r < nr; ++r) {
        gather_row(X, cx, rows[r0 + r], s.ra.data() + r * D);
        gather_row(Y, cy, rows[r0 + r], s.rb.data() + r * Dv);
      }
      gemm(true, false, D, Dv, nr, T(1), s.ra.data(), D, s.rb.data(), Dv, T(1), M, Dv);
    }
  };
  auto apply = [&](const int32_t* rows, int64_t n, const T* Y, const Chunking& cy, const T* M,
                   T* acc, const Chunking& cacc) {
    for (int64_t r0 = 0; r0 < n; r0 += kChunk) {
      const int64_t nr = std::min(kChunk, n - r0);
      for (int64_t r = 0; r < nr; ++r) gather_row(Y, cy, rows[r0 + r], s.rb.data() + r * Dv);
      gemm(false, true, nr, D, Dv, T(1), s.rb.data(), Dv, M, Dv, T(0), s.rout.data(), D);
      for (int64_t r = 0; r < nr; ++r) scatter_add_row(acc, cacc, rows[r0 + r], s.rout.data() + r * D);
    }
  };
  outer_sum(kr, b, s.k.data(), c.k, s.v.data(), c.v, s.mk.data());
  outer_sum(qr, a, s.q.data(), c.q, s.g.data(), c.g, s.mq.data());
  apply(qr, a, s.g.data(), c.g, s.mk.data(), s.dq.data(), c.q);
  apply(kr, b, s.v.data(), c.v, s.mq.data(), s.dk.data(), c.k);
}

// Pass 1, one value chunk: ∂L/∂v_j += Σ_{i in bucket} g_i; s_ij += g_iᵀv_j over the chunk.
template <int64_t W, class T>
void value_pass(const SharedBuckets& sb, int64_t D, int64_t Dv, int64_t cw_rt, const T* gc,
                const T* vc, T* dvc, T* gsum_rt, T* sp) {
  const int64_t cw = W ? W : cw_rt;
  alignas(64) T gsum_w[W ? W : 1];
  T* gsum = W ? gsum_w : gsum_rt;
  const int32_t* qr = sb.qrows.data();
  const int32_t* kr = sb.krows.data();
  const int32_t* qend = qr + sb.qrows.size();
  const int32_t* kend = kr + sb.krows.size();
  for (int64_t u = 0; u < sb.size(); ++u) {
    const int64_t na = sb.qn[u], nb = sb.kn[u];
    std::fill(gsum, gsum + cw, T(0));
    for (int64_t i = 0; i < na; ++i) {
      if (qr + i + kPrefetch < qend) prefetch(gc + qr[i + kPrefetch] * cw, cw);
      const T* gi = gc + qr[i] * cw;
#pragma omp simd
      for (int64_t t = 0; t < cw; ++t) gsum[t] += gi[t];
    }
    for (int64_t j = 0; j < nb; ++j) {
      if (kr + j + kPrefetch < kend) {
        prefetch(dvc + kr[j + kPrefetch] * cw, cw);
        prefetch(vc + kr[j + kPrefetch] * cw, cw);
      }
      T* dvj = dvc + kr[j] * cw;
#pragma omp simd
      for (int64_t t = 0; t < cw; ++t) dvj[t] += gsum[t];
    }
    if (!factored(na, nb, D, Dv))
      for (int64_t i = 0; i < na; ++i) {
        const T* gi = gc + qr[i] * cw;
        for (int64_t j = 0; j < nb; ++j) {
          const T* vj = vc + kr[j] * cw;
          T dot = 0;
#pragma omp simd reduction(+ : dot)
          for (int64_t t = 0; t < cw; ++t) dot += gi[t] * vj[t];
          *sp++ += dot;
        }
      }
    qr += na;
    kr += nb;
  }
}

// Pass 2, one key chunk: ∂L/∂q̂_i += s_ij k̂_j, ∂L/∂k̂_j += s_ij q̂_i over the chunk.
template <int64_t W, class T>
void key_pass(const SharedBuckets& sb, int64_t D, int64_t Dv, int64_t cw_rt, const T* qc,
              const T* kc, T* dqc, T* dkc, const T* sp) {
  const int64_t cw = W ? W : cw_rt;
  const int32_t* qr = sb.qrows.data();
  const int32_t* kr = sb.krows.data();
  const int32_t* qend = qr + sb.qrows.size();
  const int32_t* kend = kr + sb.krows.size();
  for (int64_t u = 0; u < sb.size(); ++u) {
    const int64_t na = sb.qn[u], nb = sb.kn[u];
    if (!factored(na, nb, D, Dv))
      for (int64_t i = 0; i < na; ++i) {
        if (qr + i + kPrefetch < qend) {
          prefetch(qc + qr[i + kPrefetch] * cw, cw);
          prefetch(dqc + qr[i + kPrefetch] * cw, cw);
        }
        const T* qi = qc + qr[i] * cw;
        T* dqi = dqc + qr[i] * cw;
        for (int64_t j = 0; j < nb; ++j) {
          if (i == 0 && kr + j + kPrefetch < kend) {
            prefetch(kc + kr[j + kPrefetch] * cw, cw);
            prefetch(dkc + kr[j + kPrefetch] * cw, cw);
          }
          const T sij = *sp++;
          const T* kj = kc + kr[j] * cw;
          T* dkj = dkc + kr[j] * cw;
#pragma omp simd
          for (int64_t t = 0; t < cw; ++t) dqi[t] += sij * kj[t];
#pragma omp simd
          for (int64_t t = 0; t < cw; ++t) dkj[t] += sij * qi[t];
        }
      }
    qr += na;
    kr += nb;
  }
}

}  // namespace

template <class T>
void yoso_backward_lsh(const YosoParams<T>& p, const int32_t* q_codes, const int32_t* k_codes,
                       const YosoGrads<T>& g) {
  const int64_t B = p.q.B, H = p.q.H, Nq = p.q.N, Nk = p.k.N, D = p.q.D, Dv = p.v.D;
  const int64_t m = p.num_hashes, N = std::max(Nq, Nk);
  const BackwardShapes c(Nq, Nk, D, Dv, chunking<T>(Dv, N, 3), chunking<T>(D, N, 4));
  const int threads = threads_for(p.threads, B * H, 4.0 * B * H * m * (Nq + Nk) * (D + Dv));
  std::vector<std::unique_ptr<BackwardScratch<T>>> scratch;
  for (int t = 0; t < threads; ++t) scratch.push_back(std::make_unique<BackwardScratch<T>>(c));
  parallel_for(B * H, threads, [&](int64_t bh) {
    const int64_t b = bh / H, h = bh % H;
    BackwardScratch<T>& s = *scratch[thread_index()];
    SharedBuckets& sb = s.buckets;
    inverse_norms(p.q, b, h, s.inv_q.data());
    inverse_norms(p.k, b, h, s.inv_k.data());
    pack_chunked(p.q, b, h, s.inv_q.data(), c.q, s.q.data());
    pack_chunked(p.k, b, h, s.inv_k.data(), c.k, s.k.data());
    pack_chunked(g.grad_out, b, h, static_cast<const T*>(nullptr), c.g, s.g.data());
    pack_chunked(p.v, b, h, static_cast<const T*>(nullptr), c.v, s.v.data());
    std::fill(s.dq.data(), s.dq.data() + c.q.size(), T(0));
    std::fill(s.dk.data(), s.dk.data() + c.k.size(), T(0));
    std::fill(s.dv.data(), s.dv.data() + c.v.size(), T(0));
    for (int64_t next = 0; next < m;) {
      sb.next_group(q_codes + bh * m * Nq, k_codes + bh * m * Nk, m, Nq, Nk, p.hash_bits, D, Dv,
                    &next);
      s.pairs.assign(sb.pairs, T(0));
      for (int64_t k = 0; k < c.v.nc; ++k) {
        const int64_t cw = c.v.cw;
        with_width<T>(cw, [&](auto w) {
          value_pass<decltype(w)::value, T>(sb, D, Dv, cw, s.g.data() + k * Nq * cw,
                                            s.v.data() + k * Nk * cw, s.dv.data() + k * Nk * cw,
                                            s.gsum.data(), s.pairs.data());
        });
      }
      for (int64_t k = 0; k < c.q.nc; ++k) {
        const int64_t cw = c.q.cw;
        with_width<T>(cw, [&](auto w) {
          key_pass<decltype(w)::value, T>(sb, D, Dv, cw, s.q.data() + k * Nq * cw,
                                          s.k.data() + k * Nk * cw, s.dq.data() + k * Nq * cw,
                                          s.dk.data() + k * Nk * cw, s.pairs.data());
        });
      }
      const int32_t* qr = sb.qrows.data();  // the large buckets, full width through GEMMs
      const int32_t* kr = sb.krows.data();
      for (int64_t u = 0; u < sb.size(); ++u) {
        if (factored(sb.qn[u], sb.kn[u], D, Dv)) bucket_factored(c, qr, sb.qn[u], kr, sb.kn[u], s);
        qr += sb.qn[u];
        kr += sb.kn[u];
      }
    }
    // Scale (1/m for v, τ/2m for the surrogate) and chain through the normalisation.
    const T inv_m = T(1) / T(m), cs = T(p.hash_bits) / T(2 * m);
    for (int64_t n = 0; n < Nk; ++n) {
      T* gv = g.grad_v.row(b, h, n);
      T* gk = g.grad_k.row(b, h, n);
      gather_row(s.dv.data(), c.v, n, gv);
      gather_row(s.dk.data(), c.k, n, gk);
      for (int64_t d = 0; d < Dv; ++d) gv[d] *= inv_m;
      for (int64_t d = 0; d < D; ++d) gk[d] *= cs;
      normalize_backward_row(p.k.row(b, h, n), s.inv_k[n], D, gk);
    }
    for (int64_t n = 0; n < Nq; ++n) {
      T* gq = g.grad_q.row(b, h, n);
      gather_row(s.dq.data(), c.q, n, gq);
      for (int64_t d = 0; d < D; ++d) gq[d] *= cs;
      normalize_backward_row(p.q.row(b, h, n), s.inv_q[n], D, gq);
    }
  });
}

#define LONGATTN_YOSO_LSH(T)                                                                  \
  template void yoso_forward<T>(const YosoParams<T>&, const int32_t*, const int32_t*, BHND<T>); \
  template void yoso_backward_lsh<T>(const YosoParams<T>&, const int32_t*, const int32_t*,     \
                                     const YosoGrads<T>&);
LONGATTN_YOSO_LSH(float)
LONGATTN_YOSO_LSH(double)

LONGATTN_ISA_END
}  // namespace longattn::kernels
