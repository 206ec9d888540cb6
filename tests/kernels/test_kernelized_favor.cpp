// Performer random features and the FAVOR+ estimate of softmax attention.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "kernelized_reference.h"
#include "kernels/kernelized_attention/random_features.h"

using namespace longattn::kernels;
using namespace kernelized_ref;

namespace {

std::vector<double> draw(int64_t m, int64_t d, uint64_t seed, bool orth, RandomFeatureScaling sc,
                         int64_t heads = 1) {
  std::vector<double> w(heads * m * d);
  random_features(m, d, seed, orth, sc, heads, w.data());
  return w;
}

double dot(const double* a, const double* b, int64_t d) {
  double s = 0;
  for (int64_t i = 0; i < d; ++i) s += a[i] * b[i];
  return s;
}

}  // namespace

// Rows within a d x d block are orthogonal (to rounding of a double Gram-Schmidt); rows of
// different blocks are not (the blocks are independent draws).
TEST(RandomFeatures, OrthogonalWithinBlocks) {
  const int64_t m = 20, d = 8;  // blocks of 8, 8 and 4 rows
  for (auto sc : {RandomFeatureScaling::chi, RandomFeatureScaling::sqrt_d}) {
    const auto w = draw(m, d, 3, true, sc);
    double across = 0;
    for (int64_t r = 0; r < m; ++r)
      for (int64_t s = r + 1; s < m; ++s) {
        const double c = dot(&w[r * d], &w[s * d], d) /
                         std::sqrt(dot(&w[r * d], &w[r * d], d) * dot(&w[s * d], &w[s * d], d));
        if (r / d == s / d) EXPECT_LE(std::abs(c), 1e-13) << r << " " << s;
        else across = std::max(across, std::abs(c));
      }
    EXPECT_GT(across, 0.1);
  }
}

// Norms: sqrt_d gives exactly sqrt(d); chi gives squared norms distributed as chi^2(d), so
// their mean over n = 3200 rows is d with standard deviation sqrt(2d / n) = 0.1 (d = 16);
// the test allows 6 standard deviations. The same holds for i.i.d. rows.
TEST(RandomFeatures, RowNorms) {
  const int64_t m = 64, d = 16, heads = 50;
  for (bool orth : {true, false}) {
    const auto s = draw(m, d, 5, orth, RandomFeatureScaling::sqrt_d, heads);
    for (int64_t r = 0; r < heads * m; ++r)
      EXPECT_NEAR(dot(&s[r * d], &s[r * d], d), double(d), 1e-12);
    const auto c = draw(m, d, 5, orth, RandomFeatureScaling::chi, heads);
    double mean = 0, coord = 0;
    for (int64_t r = 0; r < heads * m; ++r) {
      mean += dot(&c[r * d], &c[r * d], d) / (heads * m);
      coord += c[r * d] / (heads * m);  // first coordinate: N(0, 1), mean sd 1/sqrt(3200)
    }
    EXPECT_NEAR(mean, double(d), 0.6) << orth;
    EXPECT_NEAR(coord, 0.0, 6 / std::sqrt(double(heads * m))) << orth;
  }
}

// The same seed gives the same bits; another seed or another head gives other rows; head h
// does not depend on how many heads were asked for; float is the rounded double.
TEST(RandomFeatures, Reproducible) {
  const int64_t m = 12, d = 5;
  const auto a = draw(m, d, 42, true, RandomFeatureScaling::chi, 3);
  const auto b = draw(m, d, 42, true, RandomFeatureScaling::chi, 3);
  EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(double)));
  const auto c = draw(m, d, 43, true, RandomFeatureScaling::chi, 3);
  EXPECT_NE(a[0], c[0]);
  EXPECT_NE(a[0], a[m * d]);  // head 0 vs head 1
  const auto five = draw(m, d, 42, true, RandomFeatureScaling::chi, 5);
  EXPECT_EQ(0, std::memcmp(a.data(), five.data(), a.size() * sizeof(double)));
  std::vector<float> f(a.size());
  random_features(m, d, 42, true, RandomFeatureScaling::chi, 3, f.data());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(f[i], static_cast<float>(a[i]));
}

// FAVOR+ approaches exact softmax attention z_i = sum_j e^{q_i.k_j} v_j / sum_j e^{q_i.k_j}
// as m grows, at the rate its variance predicts.
//
// The bound. With f(w; q, k) = exp(w.(q + k) - |q|^2/2 - |k|^2/2) and w ~ N(0, I), E f =
// e^{q.k}; favor's weight is the mean of f over the m rows of omega (the 1/sqrt(m) of each
// side and the stabilisers cancel; eps = 0). So numerator N^ and denominator D^ are means of
// m i.i.d. terms, and to first order (delta method)
//   z^_ic - z_ic = (N^_ic - z_ic D^_i) / D_i = (1/m) sum_r X_r / D_i,
//   X = sum_j f(w; q_i, k_j) a_j,  a_j = v_jc - z_ic,  E X = N_ic - z_ic D_i = 0,
//   Var X = sum_{j,l} a_j a_l E[f_j f_l],
//   E[f_j f_l] = exp(|2 q_i + k_j + k_l|^2 / 2 - |q_i|^2 - |k_j|^2/2 - |k_l|^2/2)
// (the Gaussian moment generating function). Hence sigma_ic^2 = Var X / (m D_i^2), and the
// normalised squared error t^2 = (z^ - z)^2 / sigma^2 has mean 1 up to O(1/m) terms.
// Test: the mean of t^2 over queries, channels and 8 seeds is at most 3. Items of one seed
// share omega; even if they were fully correlated the mean would be a chi^2_8 / 8 variable,
// for which P(> 3) < 3e-3; the items are far from fully correlated, so the real chance of a
// false failure is much smaller. A wrong estimator (a missing |x|^2/2 term, a bias) leaves an
// error that does not shrink with m and fails at m = 1024 by orders of magnitude.
// Orthogonal rows are marginally N(0, I) too and, for positive features, reduce the variance
// (Choromanski et al. 2021); they are held to the same bound.
TEST(Favor, ApproachesSoftmaxWithDerivedVariance) {
  const int64_t N = 24, D = 8, Dv = 3, seeds = 8;
  Problem p;
  p.Nq = p.Nk = N, p.D = D, p.Dv = Dv, p.fm = FeatureMap::favor, p.eps = 0;
  p.q = testing_ref::normal_vector<double>(N * D, 61, 0.25);
  p.k = testing_ref::normal_vector<double>(N * D, 62, 0.25);
  p.v = testing_ref::random_vector<double>(N * Dv, 63);
  // Exact attention and per-(i, c) variance of one random feature.
  std::vector<double> z(N * Dv), var1(N * Dv);
  for (int64_t i = 0; i < N; ++i) {
    const double* q = &p.q[i * D];
    std::vector<double> e(N);
    double den = 0;
    for (int64_t j = 0; j < N; ++j) den += e[j] = std::exp(dot(q, &p.k[j * D], D));
    for (int64_t c = 0; c < Dv; ++c) {
      double num = 0;
      for (int64_t j = 0; j < N; ++j) num += e[j] * p.v[j * Dv + c];
      z[i * Dv + c] = num / den;
      double var = 0;
      for (int64_t j = 0; j < N; ++j)
        for (int64_t l = 0; l < N; ++l) {
          double s2 = 0;
          for (int64_t d = 0; d < D; ++d) {
            const double t = 2 * q[d] + p.k[j * D + d] + p.k[l * D + d];
            s2 += t * t;
          }
          const double eff = std::exp(s2 / 2 - dot(q, q, D) - dot(&p.k[j * D], &p.k[j * D], D) / 2 -
                                      dot(&p.k[l * D], &p.k[l * D], D) / 2);
          var += (p.v[j * Dv + c] - z[i * Dv + c]) * (p.v[l * Dv + c] - z[i * Dv + c]) * eff;
        }
      var1[i * Dv + c] = var / (den * den);
    }
  }
  for (bool orth : {false, true}) {
    double rms_first = 0, rms_last = 0;
    for (int64_t m : {16, 64, 256, 1024}) {
      p.m = m;
      double t2 = 0, mse = 0;
      for (int64_t s = 0; s < seeds; ++s) {
        p.omega = draw(m, D, 1000 + s, orth, RandomFeatureScaling::chi);
        const auto est = run_kernel<double>(p).out;
        for (int64_t i = 0; i < N * Dv; ++i) {
          const double err = est[i] - z[i];
          t2 += err * err / (var1[i] / m) / (N * Dv * seeds);
          mse += err * err / (N * Dv * seeds);
        }
      }
      EXPECT_LE(t2, 3.0) << "m=" << m << (orth ? " orthogonal" : " iid");
      if (m == 16) rms_first = std::sqrt(mse);
      if (m == 1024) rms_last = std::sqrt(mse);
    }
    // 64x more features: the error shrinks about 8x; at least 4x.
    EXPECT_LT(rms_last, rms_first / 4) << (orth ? "orthogonal" : "iid");
  }
}
