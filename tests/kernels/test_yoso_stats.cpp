// Statistical tests of the YOSO hashing and estimators, with fixed seeds and bounds derived below.
// Each check allows z = 4.5 to 5 standard errors, so a correct kernel fails one of them with
// probability < 1e-3 over all the checks together (Bonferroni), while the power checks make sure
// the bounds are tight enough to catch a wrong formula.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "yoso_runner.h"

using namespace longattn::kernels;
using yoso_ref::Problem;

namespace {

// Collision rate of pairs (q, k) at angle arccos(cosines[a]) under independent hash functions:
// heads × calls × 16 of them ((b, h) and seeds draw independently; within one (b, h) Gaussian
// hashes are independent, Hadamard hashes only when they come from different rotations, so for
// Hadamard one hash per rotation is used, every ⌊Dpad/τ⌋-th). Each function hashes kCopies
// pairs per angle, each of random direction, whose collisions are averaged into one sample per
// function; the rate's standard error comes from the spread of these samples (so any
// correlation between the copies under one function is accounted for).
struct Rate {
  double mean, se;
};
constexpr int kCopies = 5;
std::vector<Rate> collision_rates(YosoHashing hashing, int tau, int64_t D,
                                  const std::vector<double>& cosines, int64_t heads, int calls) {
  constexpr int kIndependent = 16;
  int64_t dpad = 1;
  while (dpad < std::max<int64_t>(D, tau)) dpad *= 2;
  const int stride = hashing == YosoHashing::gaussian ? 1 : int(dpad / tau);
  const int m = kIndependent * stride;
  const int64_t A = int64_t(cosines.size()), R = A * kCopies;  // row r = a·kCopies + copy
  Problem<double> P(1, heads, R, R, D, 1, 5);
  auto u = testing_ref::normal_vector<double>(2 * R * D, 6);
  for (int64_t r = 0; r < R; ++r) {  // q = e, k = c·e + s·f with e ⟂ f unit vectors
    double* e = &u[2 * r * D];
    double* f = e + D;
    double ee = 0, ef = 0, ff = 0;
    for (int64_t d = 0; d < D; ++d) ee += e[d] * e[d];
    for (int64_t d = 0; d < D; ++d) e[d] /= std::sqrt(ee);
    for (int64_t d = 0; d < D; ++d) ef += e[d] * f[d];
    for (int64_t d = 0; d < D; ++d) f[d] -= ef * e[d];
    for (int64_t d = 0; d < D; ++d) ff += f[d] * f[d];
    const double c = cosines[r / kCopies], s = std::sqrt(1 - c * c);
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t d = 0; d < D; ++d) {
        P.q[(h * R + r) * D + d] = e[d];
        P.k[(h * R + r) * D + d] = c * e[d] + s * f[d] / std::sqrt(ff);
      }
  }
  std::vector<double> sum(A, 0.0), sum2(A, 0.0);
  for (int call = 0; call < calls; ++call) {
    auto p = P.params(tau, m, 1000 + call, 2);
    p.hashing = hashing;
    auto c = yoso_run::hash(P, p);
    for (int64_t h = 0; h < heads; ++h)
      for (int i = 0; i < kIndependent; ++i)
        for (int64_t a = 0; a < A; ++a) {
          double x = 0;
          for (int64_t r = a * kCopies; r < (a + 1) * kCopies; ++r) {
            const int64_t at = (h * m + int64_t(i) * stride) * R + r;
            x += (c.q[at] == c.k[at]) / double(kCopies);
          }
          sum[a] += x;
          sum2[a] += x * x;
        }
  }
  const double n = double(heads) * calls * kIndependent;
  std::vector<Rate> rates(A);
  for (int64_t a = 0; a < A; ++a) {
    const double mean = sum[a] / n;
    rates[a] = Rate{mean, std::sqrt(std::max(0.0, sum2[a] / n - mean * mean) / (n - 1))};
  }
  return rates;
}

// Per element: mean and standard error of the mean over the samples.
struct MeanSe {
  std::vector<double> mean, se;
};
MeanSe mean_se(const std::vector<std::vector<double>>& samples) {
  const size_t n = samples[0].size(), S = samples.size();
  MeanSe r{std::vector<double>(n, 0.0), std::vector<double>(n, 0.0)};
  for (const auto& s : samples)
    for (size_t i = 0; i < n; ++i) r.mean[i] += s[i] / S;
  for (const auto& s : samples)
    for (size_t i = 0; i < n; ++i) r.se[i] += (s[i] - r.mean[i]) * (s[i] - r.mean[i]) / (S - 1);
  for (auto& x : r.se) x = std::sqrt(x / S);
  return r;
}

// |mean − expected| ≤ z·se elementwise (CLT over independent seeds), and the bound is useful:
// its largest half-width is under 10% of the largest |expected|.
void expect_within_clt(const MeanSe& m, const std::vector<double>& expected, double z, const char* what) {
  double worst = 0, widest = 0, biggest = 0;
  for (size_t i = 0; i < expected.size(); ++i) {
    worst = std::max(worst, std::abs(m.mean[i] - expected[i]) / (z * m.se[i] + 1e-12));
    widest = std::max(widest, z * m.se[i]);
    biggest = std::max(biggest, std::abs(expected[i]));
  }
  EXPECT_LE(worst, 1.0) << what;
  EXPECT_LT(widest, 0.1 * biggest) << what << ": the bound is too loose to mean anything";
}

template <class T>
std::vector<double> to_double(const std::vector<T>& x) { return std::vector<double>(x.begin(), x.end()); }

}  // namespace

TEST(YosoStats, GaussianCollisionRateMatchesFormula) {
  // 8192 independent hash functions × 5 pairs per angle, p = (1 − θ/π)^τ: the measured rate is
  // within 4.5 standard errors (CLT over the functions; 9 checks × 7e-6 two-sided), and the
  // standard error is at most that of 8192 Bernoulli(p) trials, so the check has real power.
  const std::vector<double> cosines{0.95, 0.8, 0.5};
  for (int tau : {1, 4, 8}) {
    // A Gaussian projection is rotation invariant, so D does not matter: D = 16 keeps it quick.
    auto rate = collision_rates(YosoHashing::gaussian, tau, 16, cosines, 64, 8);
    for (size_t a = 0; a < cosines.size(); ++a) {
      const double p = std::pow(1 - std::acos(cosines[a]) / M_PI, tau);
      EXPECT_NEAR(rate[a].mean, p, 4.5 * rate[a].se) << "tau " << tau << " cos " << cosines[a];
      EXPECT_LE(rate[a].se, std::sqrt(p * (1 - p) / 8192) * 1.05);
    }
  }
}

TEST(YosoStats, HadamardCollisionRateMatchesFormulaApproximately) {
  // The τ bits of one Hadamard code are τ coordinates of one pseudo-rotation, i.e. projections on
  // τ orthogonal directions, not independent ones; their agreements are slightly anti-correlated
  // and the collision rate falls below (1 − θ/π)^τ. Random orthonormal (Haar) rows do the same:
  // 0.0373 instead of 0.0390 at D = 64, τ = 8, cos 0.5, which is also the HD₃HD₂HD₁ figure of
  // papers.md §8, and 0.0326 at D = 32. Measured over 10⁶ draws, the relative deficit here is
  // δ ≈ τ(τ−1)·θ²/(12·Dpad) to within 20% (0.1–16% over these cases), so the test asks for
  //   p·(1 − 2δ) − 4.5·se ≤ rate ≤ p + 4.5·se,
  // twice the modelled deficit below and pure sampling error above; for τ = 1 (δ = 0) this is the
  // exact binomial check of one pseudo-random sign bit.
  const std::vector<double> cosines{0.95, 0.8, 0.5};
  for (int64_t D : {24, 64})
    for (int tau : {1, 4, 8}) {
      auto rate = collision_rates(YosoHashing::hadamard, tau, D, cosines, 64, 8);
      const double dpad = D <= 32 ? 32 : 64;
      for (size_t a = 0; a < cosines.size(); ++a) {
        const double theta = std::acos(cosines[a]), p = std::pow(1 - theta / M_PI, tau);
        const double delta = tau * (tau - 1) * theta * theta / (12 * dpad);
        EXPECT_LE(rate[a].mean, p + 4.5 * rate[a].se) << "D " << D << " tau " << tau << " cos " << cosines[a];
        EXPECT_GE(rate[a].mean, p * (1 - 2 * delta) - 4.5 * rate[a].se)
            << "D " << D << " tau " << tau << " cos " << cosines[a] << " rate " << rate[a].mean;
      }
    }
}

TEST(YosoStats, LshForwardIsUnbiasedForTheExpectation) {
  // Ŷ is an average of indicator sums whose expectation is exactly Y_E for Gaussian hyperplanes.
  // Over S = 400 seeds the mean is within 5 standard errors (estimated from the samples; CLT,
  // 160 elements × 5.7e-7).
  Problem<double> P(1, 2, 20, 30, 8, 4, 61, true);
  const int tau = 3, S = 400;
  auto expect = yoso_run::expectation_forward(P, P.params(tau));
  std::vector<std::vector<double>> samples;
  for (int s = 0; s < S; ++s) {
    auto p = P.params(tau, 32, 7000 + s);
    samples.push_back(yoso_run::lsh_forward(P, p, yoso_run::hash(P, p)));
  }
  expect_within_clt(mean_se(samples), expect, 5.0, "forward");
}

TEST(YosoStats, LshForwardErrorShrinksLikeOneOverSqrtM) {
  // Hashes are independent, so E‖Ŷ_m − Y_E‖² = E‖Ŷ_1 − Y_E‖² / m exactly. Each side is estimated
  // over 200 seeds (relative standard error ≈ √(2/200) = 10% if the elements of a call were fully
  // correlated, less otherwise), so the ratio for m = 16 lies in [16/2, 16·2] far beyond 5 sd,
  // while "no averaging" (1) or an error ∝ 1/m^{1/4} (4) falls outside.
  Problem<double> P(1, 2, 20, 30, 8, 4, 62);
  const int tau = 3, S = 200;
  auto expect = yoso_run::expectation_forward(P, P.params(tau));
  auto mse = [&](int m) {
    double acc = 0;
    for (int s = 0; s < S; ++s) {
      auto p = P.params(tau, m, 9000 + 131 * s + m);
      auto y = yoso_run::lsh_forward(P, p, yoso_run::hash(P, p));
      for (size_t i = 0; i < y.size(); ++i) acc += (y[i] - expect[i]) * (y[i] - expect[i]);
    }
    return acc / S;
  };
  const double ratio = mse(1) / mse(16);
  EXPECT_GT(ratio, 8.0);
  EXPECT_LT(ratio, 32.0);
}

TEST(YosoStats, LshBackwardMeanIsTheExactSurrogate) {
  // The LSH backward is linear in the collision indicators, whose mean is E_ij: over S = 400 seeds
  // its mean is within 5 standard errors of the same surrogate computed exactly (backward='exact').
  Problem<double> P(1, 2, 20, 30, 8, 4, 63, true);
  const int tau = 3, S = 400;
  auto gout = testing_ref::normal_vector<double>(P.B * P.H * P.Nq * P.Dv, 64);
  auto exact = yoso_run::backward(P, P.params(tau), gout, [](const auto& p, const auto& g) {
    yoso_backward_exact(p, g);
  });
  std::vector<std::vector<double>> q, k, v;
  for (int s = 0; s < S; ++s) {
    auto p = P.params(tau, 32, 11000 + s);
    auto G = yoso_run::lsh_backward(P, p, yoso_run::hash(P, p), gout);
    q.push_back(G.q);
    k.push_back(G.k);
    v.push_back(G.v);
  }
  // Masked rows have exactly zero gradient on both sides (se 0): their check is |0 − 0| ≤ 1e-12.
  expect_within_clt(mean_se(q), exact.q, 5.0, "grad q");
  expect_within_clt(mean_se(k), exact.k, 5.0, "grad k");
  expect_within_clt(mean_se(v), exact.v, 5.0, "grad v");
}
