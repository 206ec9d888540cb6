// fp64 references for the YOSO kernel tests, written for clarity (dense, O(N²)), and a small
// holder for a test problem.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/yoso/yoso.h"
#include "reference.h"

namespace yoso_ref {

using longattn::kernels::BHND;
using longattn::kernels::YosoDerivative;
using longattn::kernels::YosoParams;

// A [B, H, N, D] problem with q, k, v stored densely and one key mask [B, Nk] (and a query mask
// [B, Nq] drawn separately, so Nq ≠ Nk works too).
template <class T>
struct Problem {
  int64_t B, H, Nq, Nk, D, Dv;
  std::vector<T> q, k, v;
  std::vector<uint8_t> kmask, qmask;
  bool masked = false;

  Problem(int64_t B_, int64_t H_, int64_t Nq_, int64_t Nk_, int64_t D_, int64_t Dv_, uint64_t seed,
          bool with_mask = false)
      : B(B_), H(H_), Nq(Nq_), Nk(Nk_), D(D_), Dv(Dv_), masked(with_mask) {
    q = testing_ref::normal_vector<T>(B * H * Nq * D, seed);
    k = testing_ref::normal_vector<T>(B * H * Nk * D, seed + 1);
    v = testing_ref::normal_vector<T>(B * H * Nk * Dv, seed + 2);
    kmask.assign(B * Nk, 1);
    qmask.assign(B * Nq, 1);
    if (with_mask) {  // about a quarter masked, and the last batch loses its last 3 keys/queries
      auto r = testing_ref::random_vector<double>(B * (Nk + Nq), seed + 3, 0, 1);
      for (int64_t i = 0; i < B * Nk; ++i) kmask[i] = r[i] > 0.25;
      for (int64_t i = 0; i < B * Nq; ++i) qmask[i] = r[B * Nk + i] > 0.25;
      for (int64_t i = 1; i <= 3; ++i) {
        kmask[B * Nk - i] = 0;
        qmask[B * Nq - i] = 0;
      }
    }
  }

  YosoParams<T> params(int tau, int m = 1, uint64_t seed = 0, int threads = 1) const {
    YosoParams<T> p;
    p.q = BHND<const T>::contiguous(q.data(), B, H, Nq, D);
    p.k = BHND<const T>::contiguous(k.data(), B, H, Nk, D);
    p.v = BHND<const T>::contiguous(v.data(), B, H, Nk, Dv);
    if (masked) {
      p.key_padding_mask = kmask.data();
      p.key_mask_stride_b = Nk;
      p.query_padding_mask = qmask.data();
      p.query_mask_stride_b = Nq;
    }
    p.hash_bits = tau;
    p.num_hashes = m;
    p.seed = seed;
    p.threads = threads;
    return p;
  }
  bool key_on(int64_t b, int64_t j) const { return kmask[b * Nk + j] != 0; }
  bool query_on(int64_t b, int64_t i) const { return qmask[b * Nq + i] != 0; }
};

// Unit vector of row n and its norm.
template <class T>
std::vector<double> unit(const T* x, int64_t D, double* norm) {
  double s = 0;
  for (int64_t d = 0; d < D; ++d) s += double(x[d]) * double(x[d]);
  *norm = std::max(std::sqrt(s), 1e-12);
  std::vector<double> u(D);
  for (int64_t d = 0; d < D; ++d) u[d] = double(x[d]) / *norm;
  return u;
}

inline double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

inline double expectation(double x, int tau) {
  return std::pow(1.0 - std::acos(std::clamp(x, -1.0, 1.0)) / M_PI, tau);
}
inline double derivative(double x, int tau, YosoDerivative kind) {
  if (kind == YosoDerivative::surrogate) return 0.5 * tau * expectation(x, tau);
  const double lim = 1.0 - longattn::kernels::kYosoDerivativeClamp;
  const double xc = std::clamp(x, -lim, lim);
  return tau * std::pow(1.0 - std::acos(xc) / M_PI, tau - 1) / (M_PI * std::sqrt(1 - xc * xc));
}

// Dense attention with a weight function w(b, h, i, j, x_ij), masks applied.
// Returns Y [B, H, Nq, Dv] in double.
template <class T, class W>
std::vector<double> dense_forward(const Problem<T>& P, W weight) {
  std::vector<double> y(P.B * P.H * P.Nq * P.Dv, 0.0);
  for (int64_t b = 0; b < P.B; ++b)
    for (int64_t h = 0; h < P.H; ++h)
      for (int64_t i = 0; i < P.Nq; ++i) {
        if (!P.query_on(b, i)) continue;
        double nq, nk;
        auto qi = unit(&P.q[((b * P.H + h) * P.Nq + i) * P.D], P.D, &nq);
        for (int64_t j = 0; j < P.Nk; ++j) {
          if (!P.key_on(b, j)) continue;
          auto kj = unit(&P.k[((b * P.H + h) * P.Nk + j) * P.D], P.D, &nk);
          const double w = weight(b, h, i, j, dot(qi, kj));
          for (int64_t d = 0; d < P.Dv; ++d)
            y[((b * P.H + h) * P.Nq + i) * P.Dv + d] += w * double(P.v[((b * P.H + h) * P.Nk + j) * P.Dv + d]);
        }
      }
  return y;
}

struct Grads {
  std::vector<double> q, k, v;
};

// Backward of Y_i = Σ_j A_ij v_j where ∂A_ij/∂x_ij is replaced by dw(b, h, i, j, x) and A by
// a(b, h, i, j, x); the normalisation's Jacobian (I − x̂x̂ᵀ)/‖x‖ applied densely.
template <class T, class A, class DW>
Grads dense_backward(const Problem<T>& P, const std::vector<T>& gout, A a, DW dw) {
  Grads G{std::vector<double>(P.q.size(), 0.0), std::vector<double>(P.k.size(), 0.0),
          std::vector<double>(P.v.size(), 0.0)};
  const int64_t D = P.D, Dv = P.Dv;
  for (int64_t b = 0; b < P.B; ++b)
    for (int64_t h = 0; h < P.H; ++h) {
      const int64_t bh = b * P.H + h;
      std::vector<double> gkh(P.Nk * D, 0.0);
      for (int64_t i = 0; i < P.Nq; ++i) {
        if (!P.query_on(b, i)) continue;
        double nq, nk;
        auto qi = unit(&P.q[(bh * P.Nq + i) * D], D, &nq);
        std::vector<double> gqh(D, 0.0);
        for (int64_t j = 0; j < P.Nk; ++j) {
          if (!P.key_on(b, j)) continue;
          auto kj = unit(&P.k[(bh * P.Nk + j) * D], D, &nk);
          const double x = dot(qi, kj);
          double gv = 0;
          for (int64_t d = 0; d < Dv; ++d) {
            const double g = gout[(bh * P.Nq + i) * Dv + d];
            gv += g * double(P.v[(bh * P.Nk + j) * Dv + d]);
            G.v[(bh * P.Nk + j) * Dv + d] += a(b, h, i, j, x) * g;
          }
          const double s = dw(b, h, i, j, x) * gv;
          for (int64_t d = 0; d < D; ++d) {
            gqh[d] += s * kj[d];
            gkh[j * D + d] += s * qi[d];
          }
        }
        for (int64_t d = 0; d < D; ++d)  // (I − q̂q̂ᵀ)/‖q‖ · ĝ
          G.q[(bh * P.Nq + i) * D + d] = (gqh[d] - qi[d] * dot(qi, gqh)) / nq;
      }
      for (int64_t j = 0; j < P.Nk; ++j) {
        double nk;
        auto kj = unit(&P.k[(bh * P.Nk + j) * D], D, &nk);
        std::vector<double> g(gkh.begin() + j * D, gkh.begin() + (j + 1) * D);
        for (int64_t d = 0; d < D; ++d) G.k[(bh * P.Nk + j) * D + d] = (g[d] - kj[d] * dot(kj, g)) / nk;
      }
    }
  return G;
}

}  // namespace yoso_ref
