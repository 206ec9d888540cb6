// Dense fp64 reference for Shatter attention and its gradients, written for clarity:
// the full N x N weight matrix per batch, no blocking, no tricks (O(B N² P D)).
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

namespace shatter_ref {

struct Problem {
  int64_t B = 1, N = 1, D = 1, Dv = 1, P = 1;
  bool causal = false, sigmoid = false;
  double scale = 1.0;
  std::vector<double> q, k;        // [B, N, D]
  std::vector<double> v;           // [B, P, N, Dv]
  std::vector<double> partition;   // [P, 2N-1]
  std::vector<uint8_t> mask;       // [B, N] or empty (every key takes part)

  bool allowed(int64_t b, int64_t i, int64_t j) const {
    if (causal && j > i) return false;
    return mask.empty() || mask[b * N + j] != 0;
  }
  double pi(int64_t p, int64_t i, int64_t j) const { return partition[p * (2 * N - 1) + j - i + N - 1]; }
  double qk(int64_t b, int64_t i, int64_t j) const {
    double s = 0;
    for (int64_t d = 0; d < D; ++d) s += q[(b * N + i) * D + d] * k[(b * N + j) * D + d];
    return scale * s;
  }
  const double* vrow(int64_t b, int64_t p, int64_t j) const { return &v[((b * P + p) * N + j) * Dv]; }

  // a_ij for batch b, [N, N]; 0 where key j does not take part for query i.
  std::vector<double> weights(int64_t b) const {
    std::vector<double> a(N * N, 0.0);
    for (int64_t i = 0; i < N; ++i) {
      double mx = -INFINITY;
      for (int64_t j = 0; j < N; ++j)
        if (allowed(b, i, j)) mx = std::max(mx, qk(b, i, j));
      double sum = 0;
      for (int64_t j = 0; j < N; ++j) {
        if (!allowed(b, i, j)) continue;
        const double s = qk(b, i, j);
        a[i * N + j] = sigmoid ? 1.0 / (1.0 + std::exp(-s)) : std::exp(s - mx);
        sum += a[i * N + j];
      }
      if (!sigmoid && sum > 0)
        for (int64_t j = 0; j < N; ++j) a[i * N + j] /= sum;
    }
    return a;
  }
};

// out [B, N, Dv]
inline std::vector<double> forward(const Problem& pr) {
  std::vector<double> out(pr.B * pr.N * pr.Dv, 0.0);
  for (int64_t b = 0; b < pr.B; ++b) {
    const auto a = pr.weights(b);
    for (int64_t i = 0; i < pr.N; ++i)
      for (int64_t p = 0; p < pr.P; ++p)
        for (int64_t j = 0; j < pr.N; ++j) {
          const double w = a[i * pr.N + j] * pr.pi(p, i, j);
          for (int64_t d = 0; d < pr.Dv; ++d) out[(b * pr.N + i) * pr.Dv + d] += w * pr.vrow(b, p, j)[d];
        }
  }
  return out;
}

struct Grads {
  std::vector<double> q, k, v, partition;
};

// Gradients of sum(out ⊙ g) for g [B, N, Dv].
inline Grads backward(const Problem& pr, const std::vector<double>& g) {
  const int64_t N = pr.N, R = 2 * N - 1;
  Grads gr{std::vector<double>(pr.q.size(), 0.0), std::vector<double>(pr.k.size(), 0.0),
           std::vector<double>(pr.v.size(), 0.0), std::vector<double>(pr.P * R, 0.0)};
  for (int64_t b = 0; b < pr.B; ++b) {
    const auto a = pr.weights(b);
    std::vector<double> da(N * N, 0.0), ds(N * N, 0.0);
    for (int64_t i = 0; i < N; ++i) {
      const double* gi = &g[(b * N + i) * pr.Dv];
      for (int64_t j = 0; j < N; ++j)
        for (int64_t p = 0; p < pr.P; ++p) {
          double gv = 0;
          for (int64_t d = 0; d < pr.Dv; ++d) gv += gi[d] * pr.vrow(b, p, j)[d];
          const double aij = a[i * N + j], pij = pr.pi(p, i, j);
          da[i * N + j] += pij * gv;
          gr.partition[p * R + j - i + N - 1] += aij * gv;
          for (int64_t d = 0; d < pr.Dv; ++d) gr.v[((b * pr.P + p) * N + j) * pr.Dv + d] += aij * pij * gi[d];
        }
    }
    for (int64_t i = 0; i < N; ++i) {
      double row = 0;  // Σ_j a_ij dA_ij, the softmax Jacobian's correction
      for (int64_t j = 0; j < N; ++j) row += a[i * N + j] * da[i * N + j];
      for (int64_t j = 0; j < N; ++j) {
        if (!pr.allowed(b, i, j)) continue;
        const double aij = a[i * N + j];
        ds[i * N + j] = pr.sigmoid ? da[i * N + j] * aij * (1 - aij) : aij * (da[i * N + j] - row);
      }
    }
    for (int64_t i = 0; i < N; ++i)
      for (int64_t j = 0; j < N; ++j)
        for (int64_t d = 0; d < pr.D; ++d) {
          gr.q[(b * N + i) * pr.D + d] += pr.scale * ds[i * N + j] * pr.k[(b * N + j) * pr.D + d];
          gr.k[(b * N + j) * pr.D + d] += pr.scale * ds[i * N + j] * pr.q[(b * N + i) * pr.D + d];
        }
  }
  return gr;
}

// Plain single-head softmax attention, out [B, N, Dv] with values v[:, 0]: what Shatter
// must reduce to with P = 1 and a partition of all ones.
inline std::vector<double> softmax_attention(const Problem& pr) {
  std::vector<double> out(pr.B * pr.N * pr.Dv, 0.0);
  for (int64_t b = 0; b < pr.B; ++b)
    for (int64_t i = 0; i < pr.N; ++i) {
      double mx = -INFINITY, sum = 0;
      for (int64_t j = 0; j < pr.N; ++j)
        if (pr.allowed(b, i, j)) mx = std::max(mx, pr.qk(b, i, j));
      for (int64_t j = 0; j < pr.N; ++j) {
        if (!pr.allowed(b, i, j)) continue;
        const double e = std::exp(pr.qk(b, i, j) - mx);
        sum += e;
        for (int64_t d = 0; d < pr.Dv; ++d) out[(b * pr.N + i) * pr.Dv + d] += e * pr.vrow(b, 0, j)[d];
      }
      for (int64_t d = 0; d < pr.Dv && sum > 0; ++d) out[(b * pr.N + i) * pr.Dv + d] /= sum;
    }
  return out;
}

}  // namespace shatter_ref
