// YOSO-E: Y = E V with E_ij = (1 − arccos(q̂_iᵀk̂_j)/π)^τ, fused over [64 × 256] blocks (never
// an N×N matrix), and its backward with the exact derivative or the paper's surrogate.
// Normalisation is folded into the blocks: x_ij = (q_iᵀk_j)·inv_q_i·inv_k_j, so q and k are used
// in place through their strides.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/common/blas.h"
#include "kernels/common/parallel.h"
#include "kernels/yoso/yoso_internal.h"

namespace longattn::kernels {
LONGATTN_ISA_BEGIN
namespace {

using namespace yoso_detail;

constexpr int64_t kBq = 64, kBk = 256;
// |cos θ| above which the angle is recomputed from the rows (Block::cosines); below it arccos's
// condition number 1/sin θ is at most 7.1.
constexpr double kNearParallel = 0.99;

// out[i] = base[i]^e by squaring, each step one vectorisable pass (e is the same for all i).
template <class T>
void ipow_array(const T* base, T* out, T* scratch, int64_t n, int e) {
  std::copy(base, base + n, scratch);
  std::fill(out, out + n, T(1));
  for (; e > 0; e >>= 1) {
    if (e & 1)
      for (int64_t i = 0; i < n; ++i) out[i] *= scratch[i];
    if (e > 1)
      for (int64_t i = 0; i < n; ++i) scratch[i] *= scratch[i];
  }
}

// Inverse norms of every row of q and k, [B·H·Nq] and [B·H·Nk].
template <class T>
void all_inverse_norms(const YosoParams<T>& p, std::vector<T>& inv_q, std::vector<T>& inv_k) {
  const int64_t B = p.q.B, H = p.q.H;
  inv_q.resize(B * H * p.q.N);
  inv_k.resize(B * H * p.k.N);
  const int threads = threads_for(p.threads, B * H, double(B) * H * (p.q.N + p.k.N) * p.q.D);
  parallel_for(B * H, threads, [&](int64_t bh) {
    inverse_norms(p.q, bh / H, bh % H, inv_q.data() + bh * p.q.N);
    inverse_norms(p.k, bh / H, bh % H, inv_k.data() + bh * p.k.N);
  });
}

// Per-block scratch and the cosine block X[r, c] = q̂_{i0+r}ᵀ k̂_{j0+c} (nq × nk, row stride kBk).
template <class T>
struct Block {
  std::vector<T> x, e, w, s, t, a;  // a: the angle θ_ij / π
  Block() : x(kBq * kBk), e(kBq * kBk), w(kBq * kBk), s(kBq * kBk), t(kBq * kBk), a(kBq * kBk) {}

  void cosines(const YosoParams<T>& p, int64_t b, int64_t h, int64_t i0, int64_t nq, int64_t j0,
               int64_t nk, const T* inv_q, const T* inv_k) {
    gemm(false, true, nq, nk, p.q.D, T(1), p.q.row(b, h, i0), p.q.sn, p.k.row(b, h, j0), p.k.sn,
         T(0), x.data(), kBk);
    const T inv_pi = T(1.0 / M_PI);
    for (int64_t r = 0; r < nq; ++r) {
      T* xr = x.data() + r * kBk;
      T* ar = a.data() + r * kBk;
      const T iq = inv_q[i0 + r];
      for (int64_t c = 0; c < nk; ++c) xr[c] *= iq * inv_k[j0 + c];
      for (int64_t c = 0; c < nk; ++c) ar[c] = fast_acos(std::clamp(xr[c], T(-1), T(1))) * inv_pi;
      // Near q ∥ ±k, arccos of a rounded cosine loses half the digits (θ ≈ √(2(1−x)): a cosine off
      // by 6e-8 in float32 moves θ by 3e-4). Those few pairs get θ = 2·atan2(‖q̂−k̂‖, ‖q̂+k̂‖) from
      // the rows themselves, in double, which is accurate at every angle.
      for (int64_t c = 0; c < nk; ++c) {
        if (!(std::fabs(xr[c]) > kNearParallel)) continue;
        const T* qr = p.q.row(b, h, i0 + r);
        const T* kr = p.k.row(b, h, j0 + c);
        const double sq = double(iq), sk = double(inv_k[j0 + c]);
        double diff = 0, sum = 0;
        for (int64_t d = 0; d < p.q.D; ++d) {
          const double qd = double(qr[d]) * sq, kd = double(kr[d]) * sk;
          diff += (qd - kd) * (qd - kd);
          sum += (qd + kd) * (qd + kd);
        }
        ar[c] = T(2.0 * std::atan2(std::sqrt(diff), std::sqrt(sum)) / M_PI);
      }
    }
  }

  // e = E(x) (masked keys and queries: 0); with a derivative also w = dE/dx (exact or surrogate).
  void weights(const YosoParams<T>& p, int64_t b, int64_t i0, int64_t nq, int64_t j0, int64_t nk,
               const YosoDerivative* derivative) {
    const int tau = p.hash_bits;
    const int64_t n = nq * kBk;
    const T inv_pi = T(1.0 / M_PI);
    for (int64_t i = 0; i < n; ++i) t[i] = T(1) - a[i];
    ipow_array(t.data(), e.data(), s.data(), n, tau);
    if (derivative && *derivative == YosoDerivative::surrogate) {
      for (int64_t i = 0; i < n; ++i) w[i] = T(0.5 * tau) * e[i];
    } else if (derivative) {
      // τ (1 − θ/π)^{τ−1} / (π √(1 − x²)) at x clamped to |x| ≤ 1 − δ (unbounded at ±1).
      const T lim = T(1.0 - kYosoDerivativeClamp);
      for (int64_t i = 0; i < n; ++i) {
        const T xc = std::clamp(x[i], -lim, lim);
        t[i] = T(1) - fast_acos(xc) * inv_pi;
        x[i] = T(tau) * inv_pi / std::sqrt(T(1) - xc * xc);
      }
      ipow_array(t.data(), w.data(), s.data(), n, tau - 1);
      for (int64_t i = 0; i < n; ++i) w[i] *= x[i];
    }
    for (int64_t r = 0; r < nq; ++r) {
      const bool q_on = takes_part(p.query_padding_mask, p.query_mask_stride_b, b, i0 + r);
      for (int64_t c = 0; c < nk; ++c)
        if (!q_on || !takes_part(p.key_padding_mask, p.key_mask_stride_b, b, j0 + c)) {
          e[r * kBk + c] = 0;
          w[r * kBk + c] = 0;
        }
    }
  }
};

}  // namespace

template <class T>
void yoso_expectation_forward(const YosoParams<T>& p, BHND<T> out) {
  const int64_t B = p.q.B, H = p.q.H, Nq = p.q.N, Nk = p.k.N, Dv = p.v.D;
  std::vector<T> inv_q, inv_k;
  all_inverse_norms(p, inv_q, inv_k);
  const int64_t q_blocks = (Nq + kBq - 1) / kBq;
  const double flops = 2.0 * B * H * Nq * Nk * (p.q.D + Dv + 20);
  parallel_for(B * H * q_blocks, threads_for(p.threads, B * H * q_blocks, flops), [&](int64_t item) {
    const int64_t bh = item / q_blocks, b = bh / H, h = bh % H;
    const int64_t i0 = (item % q_blocks) * kBq, nq = std::min(kBq, Nq - i0);
    Block<T> blk;
    std::vector<T> acc(kBq * Dv, T(0));
    for (int64_t j0 = 0; j0 < Nk; j0 += kBk) {
      const int64_t nk = std::min(kBk, Nk - j0);
      blk.cosines(p, b, h, i0, nq, j0, nk, inv_q.data() + bh * Nq, inv_k.data() + bh * Nk);
      blk.weights(p, b, i0, nq, j0, nk, nullptr);
      gemm(false, false, nq, Dv, nk, T(1), blk.e.data(), kBk, p.v.row(b, h, j0), p.v.sn, T(1),
           acc.data(), Dv);
    }
    for (int64_t r = 0; r < nq; ++r) std::copy_n(acc.data() + r * Dv, Dv, out.row(b, h, i0 + r));
  });
}

template <class T>
void yoso_expectation_backward(const YosoParams<T>& p, const YosoGrads<T>& g,
                               YosoDerivative derivative) {
  const int64_t B = p.q.B, H = p.q.H, Nq = p.q.N, Nk = p.k.N, D = p.q.D, Dv = p.v.D;
  std::vector<T> inv_q_all, inv_k_all;
  all_inverse_norms(p, inv_q_all, inv_k_all);
  // One (b, h) per work item: ∂L/∂k and ∂L/∂v sum over query blocks in a fixed order.
  const double flops = 2.0 * B * H * Nq * Nk * (3 * D + 2 * Dv + 40);
  parallel_for(B * H, threads_for(p.threads, B * H, flops), [&](int64_t bh) {
    const int64_t b = bh / H, h = bh % H;
    const T* inv_q = inv_q_all.data() + bh * Nq;
    const T* inv_k = inv_k_all.data() + bh * Nk;
    for (int64_t n = 0; n < Nq; ++n) std::fill_n(g.grad_q.row(b, h, n), D, T(0));
    for (int64_t n = 0; n < Nk; ++n) std::fill_n(g.grad_k.row(b, h, n), D, T(0));
    for (int64_t n = 0; n < Nk; ++n) std::fill_n(g.grad_v.row(b, h, n), Dv, T(0));
    Block<T> blk;
    for (int64_t i0 = 0; i0 < Nq; i0 += kBq) {
      const int64_t nq = std::min(kBq, Nq - i0);
      for (int64_t j0 = 0; j0 < Nk; j0 += kBk) {
        const int64_t nk = std::min(kBk, Nk - j0);
        blk.cosines(p, b, h, i0, nq, j0, nk, inv_q, inv_k);
        blk.weights(p, b, i0, nq, j0, nk, &derivative);
        // ∂L/∂v_j += Σ_i E_ij g_i
        gemm(true, false, nk, Dv, nq, T(1), blk.e.data(), kBk, g.grad_out.row(b, h, i0),
             g.grad_out.sn, T(1), g.grad_v.row(b, h, j0), g.grad_v.sn);
        // S_ij = W_ij (g_iᵀ v_j); ∂L/∂q̂_i += Σ_j S_ij k̂_j, ∂L/∂k̂_j += Σ_i S_ij q̂_i.
        T* S = blk.s.data();
        gemm(false, true, nq, nk, Dv, T(1), g.grad_out.row(b, h, i0), g.grad_out.sn,
             p.v.row(b, h, j0), p.v.sn, T(0), S, kBk);
        T* Sq = blk.x.data();  // S scaled by inv_k (columns), for ∂L/∂q̂ from raw k
        T* Sk = blk.t.data();  // S scaled by inv_q (rows), for ∂L/∂k̂ from raw q
        for (int64_t r = 0; r < nq; ++r)
          for (int64_t c = 0; c < nk; ++c) {
            const T sv = S[r * kBk + c] * blk.w[r * kBk + c];
            Sq[r * kBk + c] = sv * inv_k[j0 + c];
            Sk[r * kBk + c] = sv * inv_q[i0 + r];
          }
        gemm(false, false, nq, D, nk, T(1), Sq, kBk, p.k.row(b, h, j0), p.k.sn, T(1),
             g.grad_q.row(b, h, i0), g.grad_q.sn);
        gemm(true, false, nk, D, nq, T(1), Sk, kBk, p.q.row(b, h, i0), p.q.sn, T(1),
             g.grad_k.row(b, h, j0), g.grad_k.sn);
      }
    }
    for (int64_t n = 0; n < Nq; ++n) normalize_backward_row(p.q.row(b, h, n), inv_q[n], D, g.grad_q.row(b, h, n));
    for (int64_t n = 0; n < Nk; ++n) normalize_backward_row(p.k.row(b, h, n), inv_k[n], D, g.grad_k.row(b, h, n));
  });
}

template <class T>
void yoso_backward_exact(const YosoParams<T>& p, const YosoGrads<T>& g) {
  yoso_expectation_backward(p, g, YosoDerivative::surrogate);
}

#define LONGATTN_YOSO_E(T)                                                                     \
  template void yoso_expectation_forward<T>(const YosoParams<T>&, BHND<T>);                   \
  template void yoso_expectation_backward<T>(const YosoParams<T>&, const YosoGrads<T>&,       \
                                             YosoDerivative);                                  \
  template void yoso_backward_exact<T>(const YosoParams<T>&, const YosoGrads<T>&);
LONGATTN_YOSO_E(float)
LONGATTN_YOSO_E(double)

LONGATTN_ISA_END
}  // namespace longattn::kernels
