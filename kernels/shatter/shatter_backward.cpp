// Shatter backward. With W_p = A ⊙ Π_p and g = grad_out:
//   dV_p = W_pᵀ g,   dΠ_p(r) = Σ_{j-i=r} a_ij (g_i · v[p]_j),
//   dA_ij = Σ_p Π_p(j-i) (g_i · v[p]_j),
//   softmax: dS_ij = a_ij (dA_ij - D_i) with D_i = Σ_j a_ij dA_ij = g_i · out_i
//   sigmoid: dS_ij = dA_ij a_ij (1 - a_ij);   dq = scale dS k,  dk = scale dSᵀ q.
// Work items are (batch, lane): lane l owns key blocks l, l+L, ... (dk and dv rows are
// its own) and accumulates dq and dΠ into a buffer of its own. L depends only on the
// problem size, and the buffers are summed in a fixed order, so the result is the same
// bit for bit whatever the thread count.
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

// Enough work items (B * L >= 16) to keep 16 threads busy, no more lanes than key blocks.
int64_t lanes_for(int64_t B, int64_t nkb) {
  const int64_t want = (16 + B - 1) / B;
  return std::max<int64_t>(1, std::min(want, nkb));
}

template <class T>
struct BackwardScratch {
  std::vector<T> a, da, dap, w;
  // The key block's k and v_p transposed ([D][nk], [P][Dv][nk]), the B operands of the score
  // GEMMs; packed once per key block and shared by its query blocks.
  std::vector<T> kt, vt;
  BackwardScratch(int64_t D, int64_t Dv, int64_t P)
      : a(kBlockQ * kBlockK), da(kBlockQ * kBlockK), dap(kBlockQ * kBlockK), w(kBlockQ * kBlockK),
        kt(D * kBlockK), vt(P * Dv * kBlockK) {}
  void pack_key_block(const ShatterParams<T>& p, int64_t b, int64_t j0, int64_t nk) {
    pack_transposed(p.k.row(b, 0, j0), p.k.sn, nk, p.q.D, kt.data());
    for (int64_t pp = 0; pp < p.v.H; ++pp)
      pack_transposed(p.v.row(b, pp, j0), p.v.sn, nk, p.v.D, vt.data() + pp * p.v.D * nk);
  }
};

template <class T>
struct LaneOut {
  T* dq;          // [N, D] rows of this lane's dq accumulator, row stride dq_sn
  int64_t dq_sn;
  T* dpart;       // [P, 2N-1] this lane's partition-gradient accumulator
};

// Recomputes the weights of a tile: softmax exp(s - lse_i), sigmoid σ(s); 0 where the key
// does not take part.
template <class T>
void recompute_weights(const ShatterParams<T>& p, const T* lse_b, const uint8_t* mask_b,
                       int64_t i0, int64_t nq, int64_t j0, int64_t nk, T* a) {
  const bool softmax = p.activation == ShatterActivation::softmax;
  for (int64_t ii = 0; ii < nq; ++ii) {
    T* __restrict row = a + ii * nk;
    const int64_t lim = causal_limit(p.causal, i0, ii, j0, nk);
    if (softmax) {
      const T l = lse_b[i0 + ii];
      if (l == neg_inf<T>()) {
        std::fill(row, row + nk, T(0));
        continue;
      }
      for (int64_t jj = 0; jj < lim; ++jj) row[jj] = vexp(row[jj] - l);
    } else {
      for (int64_t jj = 0; jj < lim; ++jj) row[jj] = sigmoid(row[jj]);
    }
    for (int64_t jj = lim; jj < nk; ++jj) row[jj] = 0;
    if (mask_b)
      for (int64_t jj = 0; jj < lim; ++jj)
        if (!mask_b[j0 + jj]) row[jj] = 0;
  }
}

// The backward of a tile that causal masking cuts while its rows hold inf or NaN: the same
// sums as backward_tile below, pair by pair, skipping every pair whose weight a_ij is 0
// (kernels/common/guarded_products.h says why). sc.a holds the recomputed weights.
template <class T>
void guarded_backward_tile(const ShatterParams<T>& p, const ShatterGrads<T>& g, const T* delta_b,
                           int64_t b, int64_t i0, int64_t nq, int64_t j0, int64_t nk,
                           const BackwardScratch<T>& sc, const LaneOut<T>& lane) {
  const int64_t N = p.q.N, D = p.q.D, Dv = p.v.D, P = p.v.H, R = 2 * N - 1;
  const T scale = T(p.scale);
  const bool softmax = p.activation == ShatterActivation::softmax;
  for (int64_t ii = 0; ii < nq; ++ii)
    for (int64_t jj = 0; jj < nk; ++jj) {
      const T a = sc.a[ii * nk + jj];
      if (a == T(0)) continue;
      const int64_t i = i0 + ii, j = j0 + jj;
      const T* gi = g.grad_out.row(b, 0, i);
      T da = 0;
      for (int64_t pp = 0; pp < P; ++pp) {
        const T pr = p.partition[pp * p.partition_stride_p + (j - i + N - 1)];
        const T* vj = p.v.row(b, pp, j);
        T gv = 0;
        for (int64_t e = 0; e < Dv; ++e) gv += gi[e] * vj[e];
        da += pr * gv;
        lane.dpart[pp * R + (j - i + N - 1)] += a * gv;
        T* dvj = g.grad_v.row(b, pp, j);
        for (int64_t e = 0; e < Dv; ++e) dvj[e] += a * pr * gi[e];
      }
      const T ds = softmax ? scale * a * (da - delta_b[i]) : scale * da * a * (T(1) - a);
      const T *qi = p.q.row(b, 0, i), *kj = p.k.row(b, 0, j);
      T* dqi = lane.dq + i * lane.dq_sn;
      T* dkj = g.grad_k.row(b, 0, j);
      for (int64_t d = 0; d < D; ++d) {
        dqi[d] += ds * kj[d];
        dkj[d] += ds * qi[d];
      }
    }
}

template <class T>
void backward_tile(const ShatterParams<T>& p, const ShatterGrads<T>& g, const T* lse_b,
                   const T* delta_b, const uint8_t* mask_b, int64_t b, int64_t i0, int64_t nq,
                   int64_t j0, int64_t nk, BackwardScratch<T>& sc, const LaneOut<T>& lane) {
  const int64_t N = p.q.N, D = p.q.D, Dv = p.v.D, P = p.v.H, R = 2 * N - 1;
  const T* gq = g.grad_out.row(b, 0, i0);
  block_gemm(nq, nk, D, T(p.scale), p.q.row(b, 0, i0), p.q.sn, 1, sc.kt.data(), nk, false,
             sc.a.data(), nk);
  recompute_weights(p, lse_b, mask_b, i0, nq, j0, nk, sc.a.data());
  if (p.causal && j0 + nk - 1 > i0) {  // a tile that causal masking cuts
    bool finite = rows_finite(p.k.row(b, 0, j0), nk, p.k.sn, D) &&
                  rows_finite(p.q.row(b, 0, i0), nq, p.q.sn, D) && rows_finite(gq, nq, g.grad_out.sn, Dv);
    for (int64_t pp = 0; pp < P && finite; ++pp) finite = rows_finite(p.v.row(b, pp, j0), nk, p.v.sn, Dv);
    if (!finite) return guarded_backward_tile(p, g, delta_b, b, i0, nq, j0, nk, sc, lane);
  }
  for (int64_t pp = 0; pp < P; ++pp) {
    // dap = g V_pᵀ: the "dA" this stream alone would give.
    block_gemm(nq, nk, Dv, T(1), gq, g.grad_out.sn, 1, sc.vt.data() + pp * Dv * nk, nk, false,
               sc.dap.data(), nk);
    const T* part = p.partition + pp * p.partition_stride_p + (j0 - i0 + N - 1);
    T* dpart = lane.dpart + pp * R + (j0 - i0 + N - 1);
    for (int64_t ii = 0; ii < nq; ++ii) {
      const T* __restrict a = sc.a.data() + ii * nk;
      const T* __restrict dap = sc.dap.data() + ii * nk;
      const T* __restrict pr = part - ii;
      T* __restrict dpr = dpart - ii;
      T* __restrict da = sc.da.data() + ii * nk;
      T* __restrict w = sc.w.data() + ii * nk;
      if (pp == 0)
        for (int64_t jj = 0; jj < nk; ++jj) da[jj] = pr[jj] * dap[jj];
      else
        for (int64_t jj = 0; jj < nk; ++jj) da[jj] += pr[jj] * dap[jj];
      for (int64_t jj = 0; jj < nk; ++jj) {
        dpr[jj] += a[jj] * dap[jj];
        w[jj] = a[jj] * pr[jj];
      }
    }
    block_gemm(nk, Dv, nq, T(1), sc.w.data(), 1, nk, gq, g.grad_out.sn, true,
               g.grad_v.row(b, pp, j0), g.grad_v.sn);
  }
  // dS into da (scale folded in here, once).
  const T scale = T(p.scale);
  for (int64_t ii = 0; ii < nq; ++ii) {
    const T* __restrict a = sc.a.data() + ii * nk;
    T* __restrict ds = sc.da.data() + ii * nk;
    if (p.activation == ShatterActivation::softmax) {
      const T di = delta_b[i0 + ii];
      for (int64_t jj = 0; jj < nk; ++jj) ds[jj] = scale * a[jj] * (ds[jj] - di);
    } else {
      for (int64_t jj = 0; jj < nk; ++jj) ds[jj] = scale * ds[jj] * a[jj] * (T(1) - a[jj]);
    }
  }
  block_gemm(nq, D, nk, T(1), sc.da.data(), nk, 1, p.k.row(b, 0, j0), p.k.sn, true,
             lane.dq + i0 * lane.dq_sn, lane.dq_sn);
  block_gemm(nk, D, nq, T(1), sc.da.data(), 1, nk, p.q.row(b, 0, i0), p.q.sn, true,
             g.grad_k.row(b, 0, j0), g.grad_k.sn);
}

template <class T>
void zero_rows(BHND<T> t, int64_t b, int64_t h, int64_t n0, int64_t n) {
  for (int64_t i = 0; i < n; ++i) std::fill(t.row(b, h, n0 + i), t.row(b, h, n0 + i) + t.D, T(0));
}

}  // namespace

template <class T>
void shatter_backward(const ShatterParams<T>& p, const ShatterGrads<T>& g) {
  const int64_t B = p.q.B, N = p.q.N, D = p.q.D, Dv = p.v.D, P = p.v.H, R = 2 * N - 1;
  std::fill(g.grad_partition, g.grad_partition + P * R, T(0));
  if (B == 0 || N == 0) return;
  const int64_t nkb = (N + kBlockK - 1) / kBlockK;
  const int64_t L = lanes_for(B, nkb);
  const bool softmax = p.activation == ShatterActivation::softmax;

  // Lane 0 accumulates dq into grad_q itself; lanes 1.. into dq_extra [B, L-1, N, D].
  std::vector<T> dq_extra(static_cast<size_t>(B * (L - 1) * N * D), T(0));
  std::vector<T> dpart(static_cast<size_t>(B * L * P * R), T(0));
  std::vector<T> delta(softmax ? static_cast<size_t>(B * N) : 0);
  parallel_for(B, p.threads, [&](int64_t b) {
    zero_rows(g.grad_q, b, 0, 0, N);
    if (!softmax) return;
    for (int64_t i = 0; i < N; ++i) {  // D_i = g_i · out_i
      const T* gi = g.grad_out.row(b, 0, i);
      const T* oi = g.out.row(b, 0, i);
      double s = 0;
      for (int64_t d = 0; d < Dv; ++d) s += double(gi[d]) * double(oi[d]);
      delta[b * N + i] = T(s);
    }
  });

  parallel_for(B * L, p.threads, [&](int64_t item) {
    const int64_t b = item / L, l = item % L;
    const uint8_t* mask_b = p.key_padding_mask ? p.key_padding_mask + b * p.mask_stride_b : nullptr;
    LaneOut<T> lane{l == 0 ? g.grad_q.row(b, 0, 0) : dq_extra.data() + (b * (L - 1) + l - 1) * N * D,
                    l == 0 ? g.grad_q.sn : D, dpart.data() + (b * L + l) * P * R};
    BackwardScratch<T> sc(D, Dv, P);
    for (int64_t kb = l; kb < nkb; kb += L) {
      const int64_t j0 = kb * kBlockK, nk = std::min(kBlockK, N - j0);
      zero_rows(g.grad_k, b, 0, j0, nk);
      for (int64_t pp = 0; pp < P; ++pp) zero_rows(g.grad_v, b, pp, j0, nk);
      bool any = false;
      for (int64_t jj = 0; jj < nk; ++jj) any |= key_ok(mask_b, j0 + jj);
      if (!any) continue;
      // Causal: query blocks that end before j0 see none of these keys.
      const int64_t i_begin = p.causal ? (j0 / kBlockQ) * kBlockQ : 0;
      sc.pack_key_block(p, b, j0, nk);
      for (int64_t i0 = i_begin; i0 < N; i0 += kBlockQ)
        backward_tile(p, g, softmax ? g.lse + b * N : nullptr, softmax ? delta.data() + b * N : nullptr,
                      mask_b, b, i0, std::min(kBlockQ, N - i0), j0, nk, sc, lane);
    }
  });

  // Fixed-order reductions: dq over lanes, dΠ over batches and lanes.
  if (L > 1)
    parallel_for(B, p.threads, [&](int64_t b) {
      for (int64_t l = 1; l < L; ++l) {
        const T* src = dq_extra.data() + (b * (L - 1) + l - 1) * N * D;
        for (int64_t i = 0; i < N; ++i) {
          T* dst = g.grad_q.row(b, 0, i);
          for (int64_t d = 0; d < D; ++d) dst[d] += src[i * D + d];
        }
      }
    });
  const int64_t chunk = 1024, nchunks = (P * R + chunk - 1) / chunk;
  parallel_for(nchunks, p.threads, [&](int64_t c) {
    const int64_t e0 = c * chunk, e1 = std::min(P * R, e0 + chunk);
    for (int64_t bl = 0; bl < B * L; ++bl) {
      const T* src = dpart.data() + bl * P * R;
      for (int64_t e = e0; e < e1; ++e) g.grad_partition[e] += src[e];
    }
  });
}

template void shatter_backward<float>(const ShatterParams<float>&, const ShatterGrads<float>&);
template void shatter_backward<double>(const ShatterParams<double>&, const ShatterGrads<double>&);

LONGATTN_ISA_END
}  // namespace longattn::kernels
