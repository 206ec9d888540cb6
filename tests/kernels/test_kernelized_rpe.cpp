#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "kernels/kernelized_rpe/kernelized_rpe.h"
#include "reference.h"

using namespace longattn::kernels;

namespace {

struct Problem {
  int64_t B, H, N, m, Dv;
  bool causal;
  std::vector<double> a, k, v, w;  // phi_q, phi_k [B,H,N,m], v [B,H,N,Dv], w [H,2N-1]
  std::vector<uint8_t> mask;       // [B, N] or empty
  int threads = 2;
  double eps = 0.0;

  Problem(int64_t B_, int64_t H_, int64_t N_, int64_t m_, int64_t Dv_, bool causal_, uint64_t seed)
      : B(B_), H(H_), N(N_), m(m_), Dv(Dv_), causal(causal_) {
    // Features are nonnegative (as a feature map gives); weights = exp(b - max b) in (0, 1].
    a = testing_ref::random_vector<double>(B * H * N * m, seed, 0.0, 1.0);
    k = testing_ref::random_vector<double>(B * H * N * m, seed + 1, 0.0, 1.0);
    v = testing_ref::random_vector<double>(B * H * N * Dv, seed + 2);
    w = testing_ref::random_vector<double>(H * (2 * N - 1), seed + 3, 0.05, 1.0);
  }
  bool on(int64_t b, int64_t i, int64_t j) const {
    return (mask.empty() || mask[b * N + j]) && (!causal || j <= i);
  }
  // Dense fp64 formula: z_i = sum_j w a_i.K_j v_j / sum_j w a_i.K_j; 0 when the sum is 0.
  std::vector<double> dense() const {
    std::vector<double> z(B * H * N * Dv, 0.0);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t i = 0; i < N; ++i) {
          std::vector<double> num(Dv, 0.0);
          double den = 0;
          for (int64_t j = 0; j < N; ++j) {
            if (!on(b, i, j)) continue;
            double s = 0;
            for (int64_t f = 0; f < m; ++f) s += a[((b * H + h) * N + i) * m + f] * k[((b * H + h) * N + j) * m + f];
            s *= w[h * (2 * N - 1) + j - i + N - 1];
            den += s;
            for (int64_t d = 0; d < Dv; ++d) num[d] += s * v[((b * H + h) * N + j) * Dv + d];
          }
          for (int64_t d = 0; d < Dv; ++d) z[((b * H + h) * N + i) * Dv + d] = den > 0 ? num[d] / (den + eps) : 0.0;
        }
    return z;
  }
  template <class T>
  struct Run {
    std::vector<T> a, k, v, w, z, den, ga, gk, gv, gw;
  };
  template <class T>
  KernelizedRpeParams<T> params(Run<T>& r) const {
    KernelizedRpeParams<T> p;
    p.phi_q = BHND<const T>::contiguous(r.a.data(), B, H, N, m);
    p.phi_k = BHND<const T>::contiguous(r.k.data(), B, H, N, m);
    p.v = BHND<const T>::contiguous(r.v.data(), B, H, N, Dv);
    p.weights = r.w.data();
    p.weights_stride_h = 2 * N - 1;
    p.key_padding_mask = mask.empty() ? nullptr : mask.data();
    p.mask_stride_b = N;
    p.causal = causal;
    p.threads = threads;
    p.eps = eps;
    return p;
  }
  template <class T>
  Run<T> run(const std::vector<double>& gz) const {
    Run<T> r;
    r.a.assign(a.begin(), a.end()), r.k.assign(k.begin(), k.end());
    r.v.assign(v.begin(), v.end()), r.w.assign(w.begin(), w.end());
    r.z.assign(B * H * N * Dv, T(-9));
    r.den.assign(B * H * N, T(-9));
    auto p = params(r);
    kernelized_rpe_forward(p, BHND<T>::contiguous(r.z.data(), B, H, N, Dv), r.den.data());
    if (gz.empty()) return r;
    std::vector<T> g(gz.begin(), gz.end());
    r.ga.assign(a.size(), T(-9)), r.gk.assign(k.size(), T(-9)), r.gv.assign(v.size(), T(-9));
    r.gw.assign(w.size(), T(-9));
    KernelizedRpeGrads<T> gr{BHND<const T>::contiguous(r.z.data(), B, H, N, Dv), r.den.data(),
                             BHND<const T>::contiguous(g.data(), B, H, N, Dv),
                             BHND<T>::contiguous(r.ga.data(), B, H, N, m),
                             BHND<T>::contiguous(r.gk.data(), B, H, N, m),
                             BHND<T>::contiguous(r.gv.data(), B, H, N, Dv), r.gw.data()};
    kernelized_rpe_backward(p, gr);
    return r;
  }
};

double max_abs(const std::vector<double>& x) {
  double s = 0;
  for (double v : x) s = std::max(s, std::abs(v));
  return s;
}

}  // namespace

// Forward against the dense fp64 formula. Tolerances: the FFT's rounding relative to the
// largest intermediate, amplified by the division by a denominator that is a sum of positive
// terms (no cancellation): 1e-10 (double), 1e-4 (float).
TEST(KernelizedRpe, MatchesDenseFormula) {
  struct Case { int64_t B, H, N, m, Dv; bool causal, masked; };
  for (Case c : {Case{2, 2, 1, 3, 2, false, false}, Case{1, 2, 37, 5, 3, true, false},
                 Case{2, 1, 64, 20, 7, false, true}, Case{2, 2, 100, 17, 4, true, true}}) {
    Problem pr(c.B, c.H, c.N, c.m, c.Dv, c.causal, 100 + c.N);
    pr.eps = c.masked ? 1e-3 : 0.0;
    if (c.masked) {
      pr.mask.assign(c.B * c.N, 1);
      for (int64_t j = 0; j < c.N; j += 3) pr.mask[j] = 0;  // batch 0: every third key off
      for (int64_t j = 0; j < c.N / 2; ++j) pr.mask[(c.B - 1) * c.N + j] = 0;  // last: first half off
    }
    auto ref = pr.dense();
    auto rd = pr.run<double>({});
    auto rf = pr.run<float>({});
    const double scale = max_abs(ref);
    EXPECT_LE(testing_ref::max_scaled_error(rd.z, ref, 1e-10 * scale, 0), 1.0) << "N=" << c.N;
    EXPECT_LE(testing_ref::max_scaled_error(rf.z, ref, 1e-4 * scale, 0), 1.0) << "N=" << c.N;
  }
}

// Gradients for phi_q, phi_k, v and w against central differences of the forward in double
// (step 1e-5: truncation ~1e-10 times third derivatives of order 1; tolerance 1e-6).
TEST(KernelizedRpe, GradientsMatchFiniteDifferences) {
  for (bool causal : {false, true}) {
    Problem pr(2, 2, 7, 3, 2, causal, 7);
    pr.threads = 1;  // thousands of tiny forwards: no thread start-up
    pr.eps = causal ? 0.0 : 0.3;  // eps enters the denominator: its gradient must follow
    pr.mask.assign(2 * 7, 1);
    pr.mask[7 + 2] = 0;  // one masked key in batch 1
    auto gz = testing_ref::random_vector<double>(2 * 2 * 7 * 2, 8);
    auto r = pr.run<double>(gz);
    auto loss = [&](const Problem& q) {
      auto z = q.run<double>({}).z;
      double s = 0;
      for (size_t i = 0; i < z.size(); ++i) s += z[i] * gz[i];
      return s;
    };
    const double eps = 1e-5;
    auto check = [&](std::vector<double> Problem::*field, const std::vector<double>& grad, const char* name) {
      for (size_t i = 0; i < (pr.*field).size(); ++i) {
        Problem p1 = pr, p2 = pr;
        (p1.*field)[i] += eps, (p2.*field)[i] -= eps;
        EXPECT_NEAR(grad[i], (loss(p1) - loss(p2)) / (2 * eps), 1e-6) << name << " " << i << " causal=" << causal;
      }
    };
    check(&Problem::a, r.ga, "phi_q");
    check(&Problem::k, r.gk, "phi_k");
    check(&Problem::v, r.gv, "v");
    check(&Problem::w, r.gw, "w");
    if (causal) {
      for (int64_t h = 0; h < 2; ++h)
        for (int64_t rr = 1; rr < 7; ++rr) EXPECT_EQ(r.gw[h * 13 + 6 + rr], 0.0);
    }
  }
}

// Fully masked batch rows and causal rows before the first key: zeros, never NaN, and zero
// gradients.
TEST(KernelizedRpe, EmptyRowsGiveZeros) {
  for (bool causal : {false, true}) {
    const int64_t N = 40;
    Problem pr(2, 1, N, 4, 3, causal, 3);
    pr.mask.assign(2 * N, 1);
    for (int64_t j = 0; j < N; ++j) pr.mask[j] = 0;        // batch 0: no key at all
    for (int64_t j = 0; j < 10; ++j) pr.mask[N + j] = 0;   // batch 1: keys from 10 on
    auto gz = testing_ref::random_vector<double>(2 * N * 3, 4);
    for (bool dbl : {true, false}) {
      std::vector<double> z, ga, gk, gv;
      if (dbl) {
        auto r = pr.run<double>(gz);
        z = r.z, ga = r.ga, gk = r.gk, gv = r.gv;
      } else {
        auto r = pr.run<float>(gz);
        z.assign(r.z.begin(), r.z.end()), ga.assign(r.ga.begin(), r.ga.end());
        gk.assign(r.gk.begin(), r.gk.end()), gv.assign(r.gv.begin(), r.gv.end());
      }
      for (int64_t i = 0; i < N; ++i)
        for (int64_t d = 0; d < 3; ++d) ASSERT_EQ(z[i * 3 + d], 0.0) << "batch 0, i=" << i;
      for (int64_t i = 0; i < N * 4; ++i) {
        ASSERT_EQ(ga[i], 0.0);
        ASSERT_EQ(gk[i], 0.0);
      }
      for (int64_t i = 0; i < 10; ++i) {
        for (int64_t d = 0; d < 3; ++d) ASSERT_TRUE(std::isfinite(z[(N + i) * 3 + d]));
        for (int64_t f = 0; f < 4; ++f) ASSERT_EQ(gk[(N + i) * 4 + f], 0.0);  // masked keys
        if (causal) {
          for (int64_t d = 0; d < 3; ++d) ASSERT_EQ(z[(N + i) * 3 + d], 0.0) << "causal i=" << i;
        }
      }
      for (double x : z) ASSERT_TRUE(std::isfinite(x));
    }
  }
}

// Causal: changing keys and values after i leaves outputs up to i unchanged.
TEST(KernelizedRpe, CausalDoesNotLeak) {
  const int64_t N = 50, m = 6, Dv = 3, i0 = 20;
  Problem pr(1, 1, N, m, Dv, true, 9);
  auto z0 = pr.run<double>({}).z;
  for (int64_t j = i0 + 1; j < N; ++j) {
    for (int64_t f = 0; f < m; ++f) pr.k[j * m + f] *= 50.0;
    for (int64_t d = 0; d < Dv; ++d) pr.v[j * Dv + d] += 100.0;
  }
  auto z1 = pr.run<double>({}).z;
  for (int64_t i = 0; i <= i0; ++i)
    for (int64_t d = 0; d < Dv; ++d) ASSERT_NEAR(z0[i * Dv + d], z1[i * Dv + d], 1e-9) << i;
}
