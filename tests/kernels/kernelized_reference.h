// fp64 dense (N x N) reference of kernelized attention, written from the definition in
// kernels/kernelized_attention/kernelized_attention.h, and a runner for the kernel.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/kernelized_attention/kernelized_attention.h"
#include "reference.h"

namespace kernelized_ref {

using longattn::kernels::FeatureMap;

struct Problem {
  int64_t B = 1, H = 1, Nq = 1, Nk = 1, D = 1, Dv = 1, m = 0;  // m: favor only
  FeatureMap fm = FeatureMap::elu;
  bool causal = false;
  double eps = 1e-6;
  bool per_head_projection = false;
  std::vector<double> q, k, v, omega;  // contiguous [B, H, N, D]; omega [H or 1, m, D]
  std::vector<uint8_t> mask;           // [B, Nk] or empty

  int64_t features() const { return fm == FeatureMap::favor ? m : D; }
};

// Random problem: q, k, v uniform in [-scale, scale]; a mask that drops ~30% of the keys,
// all keys of the last batch when B > 1 (rows with no key), and the first key (so causal
// row 0 of batch 0 has none).
inline Problem make_problem(FeatureMap fm, bool causal, bool masked, int64_t B, int64_t H,
                            int64_t N, int64_t D, int64_t Dv, uint64_t seed, double scale = 1.0) {
  Problem p;
  p.B = B, p.H = H, p.Nq = N, p.Nk = N, p.D = D, p.Dv = Dv, p.fm = fm, p.causal = causal;
  p.m = fm == FeatureMap::favor ? std::max<int64_t>(2, 2 * D) : 0;
  p.q = testing_ref::random_vector<double>(B * H * N * D, seed, -scale, scale);
  p.k = testing_ref::random_vector<double>(B * H * N * D, seed + 1, -scale, scale);
  p.v = testing_ref::random_vector<double>(B * H * N * Dv, seed + 2);
  if (fm == FeatureMap::favor) {
    p.per_head_projection = (seed % 2) == 1;
    p.omega = testing_ref::normal_vector<double>((p.per_head_projection ? H : 1) * p.m * D,
                                                 seed + 3);
  }
  if (masked) {
    auto u = testing_ref::random_vector<double>(B * N, seed + 4, 0, 1);
    p.mask.resize(B * N);
    for (int64_t i = 0; i < B * N; ++i) p.mask[i] = u[i] > 0.3;
    p.mask[0] = 0;
    if (B > 1)
      for (int64_t j = 0; j < N; ++j) p.mask[(B - 1) * N + j] = 0;
  }
  return p;
}

// Exponents u of one row (favor: omega_r . x - |x|^2/2; others: x itself).
inline std::vector<double> exponents(const Problem& p, const double* x, int64_t h) {
  const int64_t D = p.D;
  if (p.fm != FeatureMap::favor) return std::vector<double>(x, x + D);
  const double* om = p.omega.data() + (p.per_head_projection ? h * p.m * D : 0);
  double sq = 0;
  for (int64_t d = 0; d < D; ++d) sq += x[d] * x[d];
  std::vector<double> u(p.m);
  for (int64_t r = 0; r < p.m; ++r) {
    double s = 0;
    for (int64_t d = 0; d < D; ++d) s += om[r * D + d] * x[d];
    u[r] = s - sq / 2;
  }
  return u;
}

// Features of one row; exponential maps shifted by c (favor also divided by sqrt(m)).
inline std::vector<double> features(const Problem& p, const std::vector<double>& u, double c) {
  std::vector<double> f(u.size());
  for (size_t r = 0; r < u.size(); ++r) {
    switch (p.fm) {
      case FeatureMap::elu: f[r] = u[r] > 0 ? u[r] + 1 : std::exp(u[r]); break;
      case FeatureMap::relu: f[r] = std::max(u[r], 0.0); break;
      case FeatureMap::sikf: f[r] = std::exp(u[r] - c); break;
      case FeatureMap::favor: f[r] = std::exp(u[r] - c) / std::sqrt(double(p.m)); break;
    }
  }
  return f;
}

inline std::vector<double> reference(const Problem& p) {
  const int64_t D = p.D, Dv = p.Dv;
  const bool expo = p.fm == FeatureMap::sikf || p.fm == FeatureMap::favor;
  std::vector<double> out(p.B * p.H * p.Nq * Dv, 0.0);
  for (int64_t b = 0; b < p.B; ++b)
    for (int64_t h = 0; h < p.H; ++h) {
      const int64_t bh = b * p.H + h;
      std::vector<std::vector<double>> uk(p.Nk);
      for (int64_t j = 0; j < p.Nk; ++j) uk[j] = exponents(p, &p.k[(bh * p.Nk + j) * D], h);
      std::vector<std::vector<double>> fk_cache(p.Nk);
      double cached_R = NAN;
      for (int64_t i = 0; i < p.Nq; ++i) {
        auto uq = exponents(p, &p.q[(bh * p.Nq + i) * D], h);
        auto takes_part = [&](int64_t j) {
          return (p.mask.empty() || p.mask[b * p.Nk + j]) && (!p.causal || j <= i);
        };
        // Stabilisers: the query row's max, and the max over every key taking part.
        double cq = *std::max_element(uq.begin(), uq.end()), R = -INFINITY;
        for (int64_t j = 0; j < p.Nk; ++j)
          if (takes_part(j)) R = std::max(R, *std::max_element(uk[j].begin(), uk[j].end()));
        if (!expo) cq = R = 0;
        const auto fq = features(p, uq, cq);
        if (R != cached_R) {  // R changes rarely (a running max): recompute then only
          for (int64_t j = 0; j < p.Nk; ++j) fk_cache[j] = features(p, uk[j], R);
          cached_R = R;
        }
        double den = 0;
        std::vector<double> num(Dv, 0.0);
        for (int64_t j = 0; j < p.Nk; ++j) {
          if (!takes_part(j)) continue;
          const auto& fk = fk_cache[j];
          double w = 0;
          for (size_t r = 0; r < fk.size(); ++r) w += fq[r] * fk[r];
          den += w;
          for (int64_t c = 0; c < Dv; ++c) num[c] += w * p.v[(bh * p.Nk + j) * Dv + c];
        }
        const double d = den + p.eps;
        for (int64_t c = 0; c < Dv; ++c) out[(bh * p.Nq + i) * Dv + c] = d > 0 ? num[c] / d : 0;
      }
    }
  return out;
}

// Runs the kernel on the problem in type T; `bnhd` stores q, k, v as [B, N, H, D] and passes
// them with those strides; save_denominators passes the forward's denominators to the
// backward (otherwise the backward recomputes them). Returns out (and, when gout is given, the gradients) as double.
template <class T>
struct Run {
  std::vector<double> out, gq, gk, gv;
};

template <class T>
std::vector<T> cast(const std::vector<double>& x) {
  return std::vector<T>(x.begin(), x.end());
}

template <class T>
Run<T> run_kernel(const Problem& p, const std::vector<double>* gout = nullptr, int threads = 2,
                  int64_t chunk = 0, bool bnhd = false, bool save_denominators = true) {
  using namespace longattn::kernels;
  auto layout = [&](const std::vector<double>& x, int64_t N, int64_t D, std::vector<T>& buf) {
    buf.resize(x.size());
    BHND<T> view = bnhd ? BHND<T>{buf.data(), p.B, p.H, N, D, N * p.H * D, D, p.H * D}
                        : BHND<T>::contiguous(buf.data(), p.B, p.H, N, D);
    for (int64_t b = 0; b < p.B; ++b)
      for (int64_t h = 0; h < p.H; ++h)
        for (int64_t n = 0; n < N; ++n)
          for (int64_t d = 0; d < D; ++d)
            view.row(b, h, n)[d] = static_cast<T>(x[((b * p.H + h) * N + n) * D + d]);
    return BHND<const T>{view.data, view.B, view.H, view.N, view.D, view.sb, view.sh, view.sn};
  };
  std::vector<T> qb, kb, vb, gob;
  KernelizedAttentionParams<T> prm;
  prm.q = layout(p.q, p.Nq, p.D, qb);
  prm.k = layout(p.k, p.Nk, p.D, kb);
  prm.v = layout(p.v, p.Nk, p.Dv, vb);
  std::vector<T> omega = cast<T>(p.omega);
  prm.key_padding_mask = p.mask.empty() ? nullptr : p.mask.data();
  prm.mask_stride_b = p.Nk;
  prm.feature_map = p.fm;
  prm.projection = omega.empty() ? nullptr : omega.data();
  prm.num_features = p.m;
  prm.projection_stride_h = p.per_head_projection ? p.m * p.D : 0;
  prm.causal = p.causal;
  prm.eps = p.eps;
  prm.threads = threads;
  prm.chunk = chunk;
  std::vector<T> out(p.B * p.H * p.Nq * p.Dv);
  auto ov = BHND<T>::contiguous(out.data(), p.B, p.H, p.Nq, p.Dv);
  std::vector<T> inv(p.B * p.H * p.Nq);
  kernelized_attention_forward(prm, ov, save_denominators ? inv.data() : nullptr);
  Run<T> r;
  r.out.assign(out.begin(), out.end());
  if (!gout) return r;
  std::vector<T> go = cast<T>(*gout), gq(qb.size()), gk(kb.size()), gv(vb.size());
  KernelizedAttentionGrads<T> g;
  g.out = {ov.data, ov.B, ov.H, ov.N, ov.D, ov.sb, ov.sh, ov.sn};
  g.grad_out = BHND<const T>{go.data(), p.B, p.H, p.Nq, p.Dv, p.H * p.Nq * p.Dv, p.Nq * p.Dv, p.Dv};
  g.grad_q = BHND<T>::contiguous(gq.data(), p.B, p.H, p.Nq, p.D);
  g.grad_k = BHND<T>::contiguous(gk.data(), p.B, p.H, p.Nk, p.D);
  g.grad_v = BHND<T>::contiguous(gv.data(), p.B, p.H, p.Nk, p.Dv);
  g.inv_denom = save_denominators ? inv.data() : nullptr;
  kernelized_attention_backward(prm, g);
  r.gq.assign(gq.begin(), gq.end());
  r.gk.assign(gk.begin(), gk.end());
  r.gv.assign(gv.begin(), gv.end());
  return r;
}

}  // namespace kernelized_ref
