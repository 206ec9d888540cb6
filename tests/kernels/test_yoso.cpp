// YOSO kernels against fp64 dense references: YOSO-E forward and both backwards, the LSH
// cumulation against the collision sum it must equal for the same codes, finite differences of
// the exact derivative, padding, and determinism. Statistical tests are in test_yoso_stats.cpp.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "kernels/yoso/yoso_internal.h"
#include "yoso_runner.h"

using namespace longattn::kernels;
using yoso_ref::Problem;

namespace {

// Largest |a − ref| / scale over elements, scale = atol_frac·max|ref| + |ref|·rtol.
template <class A>
double rel_err(const A& a, const std::vector<double>& ref, double rtol) {
  double mx = 0;
  for (double r : ref) mx = std::max(mx, std::abs(r));
  return testing_ref::max_scaled_error(a, ref, rtol * (mx + 1e-300), rtol);
}

// Number of hashes in which query i and key j of (b, h) share a bucket.
int collisions(const yoso_run::Codes& c, int64_t bh, int m, int64_t Nq, int64_t Nk, int64_t i, int64_t j) {
  int n = 0;
  for (int h = 0; h < m; ++h) {
    const int32_t a = c.q[(bh * m + h) * Nq + i], b = c.k[(bh * m + h) * Nk + j];
    n += a >= 0 && a == b;
  }
  return n;
}

// fp32 errors: x has ~1e-7 error, fast_acos ≤ 5e-7; E = t^τ turns an error δ in t into a relative
// τ·δ/t ≲ 1e-5 for t ≥ 0.1, and sums of ≤ 100 terms add ~1e-5 relative: 1e-4 of the largest
// element leaves a margin of 10 while any formula error is O(1). fp64: rounding only, 1e-10.
template <class T>
double tol() { return std::is_same_v<T, float> ? 1e-4 : 1e-10; }

}  // namespace

TEST(YosoMath, FastAcosMatchesLibm) {
  // A&S 4.4.46 has |error| ≤ 2e-8 in exact arithmetic; float evaluation adds a few ulps of values
  // ≤ π (ulp(π) = 2.4e-7): 5e-7 is two ulps.
  double worst = 0;
  for (int i = -1000000; i <= 1000000; ++i) {
    const float x = float(i) / 1000000.0f;
    worst = std::max(worst, std::abs(double(yoso_detail::fast_acos(x)) - std::acos(double(x))));
  }
  EXPECT_LE(worst, 5e-7);
}

template <class T>
class YosoTyped : public ::testing::Test {};
using YosoTypes = ::testing::Types<float, double>;
TYPED_TEST_SUITE(YosoTyped, YosoTypes);

TYPED_TEST(YosoTyped, ExpectationForwardMatchesReference) {
  using T = TypeParam;
  for (int tau : {1, 3, 8})
    for (bool masked : {false, true}) {
      Problem<T> P(2, 3, 37, 300, 12, 5, 10 + tau, masked);  // Nq ≠ Nk, partial blocks
      auto y = yoso_run::expectation_forward(P, P.params(tau, 1, 0, 2));
      auto ref = yoso_ref::dense_forward(P, [&](auto, auto, auto, auto, double x) {
        return yoso_ref::expectation(x, tau);
      });
      EXPECT_LE(rel_err(y, ref, tol<T>()), 1.0) << "tau " << tau << " masked " << masked;
    }
}

TYPED_TEST(YosoTyped, ExpectationBackwardMatchesReference) {
  using T = TypeParam;
  for (auto kind : {YosoDerivative::exact, YosoDerivative::surrogate})
    for (int tau : {1, 4, 9}) {
      Problem<T> P(1, 2, 70, 45, 16, 7, 20 + tau, true);
      auto gout = testing_ref::normal_vector<T>(P.B * P.H * P.Nq * P.Dv, 99);
      auto G = yoso_run::expectation_backward(P, P.params(tau, 1, 0, 2), gout, kind);
      auto ref = yoso_ref::dense_backward(
          P, gout, [&](auto, auto, auto, auto, double x) { return yoso_ref::expectation(x, tau); },
          [&](auto, auto, auto, auto, double x) { return yoso_ref::derivative(x, tau, kind); });
      // The exact derivative amplifies the fp32 error of x by |d²E/dx²|/|dE/dx| (≤ ~50 away from
      // |x| = 1 for these random data), hence the wider fp32 bound for it.
      const double t = tol<T>() * (kind == YosoDerivative::exact && std::is_same_v<T, float> ? 10 : 1);
      EXPECT_LE(rel_err(G.q, ref.q, t), 1.0) << "q tau " << tau;
      EXPECT_LE(rel_err(G.k, ref.k, t), 1.0) << "k tau " << tau;
      EXPECT_LE(rel_err(G.v, ref.v, t), 1.0) << "v tau " << tau;
    }
}

TEST(YosoExpectation, ExactDerivativeMatchesFiniteDifferences) {
  // L = Σ w ⊙ Y_E in fp64; central differences with step 1e-6 have truncation error ~1e-12·|L'''|
  // and rounding ~1e-16·|L|/1e-6 = 1e-10: 1e-6 relative to the largest gradient is ample.
  Problem<double> P(1, 1, 6, 5, 4, 3, 77);
  const int tau = 5;
  auto w = testing_ref::normal_vector<double>(P.Nq * P.Dv, 78);
  // The derivative is unbounded at |x| = 1 and clamped there: these data stay well inside.
  auto ycheck = yoso_ref::dense_forward(P, [&](auto, auto, auto, auto, double x) {
    EXPECT_LT(std::abs(x), 0.98);
    return 0.0;
  });
  auto G = yoso_run::expectation_backward(P, P.params(tau), w, YosoDerivative::exact);
  auto loss = [&]() {
    auto y = yoso_run::expectation_forward(P, P.params(tau));
    double s = 0;
    for (size_t i = 0; i < y.size(); ++i) s += w[i] * y[i];
    return s;
  };
  auto check = [&](std::vector<double>& x, const std::vector<double>& g, const char* name) {
    std::vector<double> fd(x.size());
    for (size_t i = 0; i < x.size(); ++i) {
      const double x0 = x[i];
      x[i] = x0 + 1e-6;
      const double lp = loss();
      x[i] = x0 - 1e-6;
      const double lm = loss();
      x[i] = x0;
      fd[i] = (lp - lm) / 2e-6;
    }
    EXPECT_LE(rel_err(g, fd, 1e-6), 1.0) << name;
  };
  check(P.q, G.q, "q");
  check(P.k, G.k, "k");
  check(P.v, G.v, "v");
}

TYPED_TEST(YosoTyped, LshForwardEqualsCollisionSum) {
  using T = TypeParam;
  for (auto hashing : {YosoHashing::gaussian, YosoHashing::hadamard})
    for (int tau : {1, 3, 7, 20}) {  // τ = 20 takes two radix passes
      Problem<T> P(2, 2, 41, 53, 10, 6, 30 + tau, true);
      auto p = P.params(tau, 5, 1234, 2);
      p.hashing = hashing;
      auto codes = yoso_run::hash(P, p);
      auto y = yoso_run::lsh_forward(P, p, codes);
      auto ref = yoso_ref::dense_forward(P, [&](int64_t b, int64_t h, int64_t i, int64_t j, double) {
        return collisions(codes, b * P.H + h, 5, P.Nq, P.Nk, i, j) / 5.0;
      });
      EXPECT_LE(rel_err(y, ref, tol<T>()), 1.0) << "tau " << tau;
    }
}

TYPED_TEST(YosoTyped, LshBackwardEqualsCollisionSum) {
  using T = TypeParam;
  // τ = 1 puts ~N/2 rows in a bucket (the factored GEMM path); τ = 6 leaves small buckets (pairs).
  for (int tau : {1, 2, 6}) {
    Problem<T> P(1, 2, 150, 130, 8, 5, 40 + tau, true);
    const int m = 3;
    auto p = P.params(tau, m, 99, 2);
    auto codes = yoso_run::hash(P, p);
    auto gout = testing_ref::normal_vector<T>(P.B * P.H * P.Nq * P.Dv, 41);
    auto G = yoso_run::lsh_backward(P, p, codes, gout);
    auto a = [&](int64_t b, int64_t h, int64_t i, int64_t j, double) {
      return collisions(codes, b * P.H + h, m, P.Nq, P.Nk, i, j) / double(m);
    };
    auto dw = [&](int64_t b, int64_t h, int64_t i, int64_t j, double x) { return 0.5 * tau * a(b, h, i, j, x); };
    auto ref = yoso_ref::dense_backward(P, gout, a, dw);
    EXPECT_LE(rel_err(G.q, ref.q, tol<T>()), 1.0) << "tau " << tau;
    EXPECT_LE(rel_err(G.k, ref.k, tol<T>()), 1.0) << "tau " << tau;
    EXPECT_LE(rel_err(G.v, ref.v, tol<T>()), 1.0) << "tau " << tau;
  }
}

TEST(YosoHash, CodesAreInRangeScaleInvariantAndSeeded) {
  for (auto hashing : {YosoHashing::gaussian, YosoHashing::hadamard})
    for (int tau : {1, 9, 30}) {
      Problem<float> P(2, 2, 20, 30, 24, 4, 5, true);
      auto p = P.params(tau, 6, 7);
      p.hashing = hashing;
      auto c = yoso_run::hash(P, p);
      for (int64_t bh = 0; bh < P.B * P.H; ++bh)
        for (int h = 0; h < 6; ++h)
          for (int64_t j = 0; j < P.Nk; ++j) {
            const int32_t code = c.k[(bh * 6 + h) * P.Nk + j];
            if (P.key_on(bh / P.H, j)) {
              EXPECT_GE(code, 0);
              EXPECT_LT(int64_t(code), int64_t(1) << tau);
            } else {
              EXPECT_EQ(code, -1);
            }
          }
      Problem<float> S = P;  // sign hashes do not see positive scaling
      for (auto& x : S.q) x *= 3.5f;
      EXPECT_EQ(yoso_run::hash(S, S.params(tau, 6, 7)).q, yoso_run::hash(P, P.params(tau, 6, 7)).q);
      if (tau > 1) {
        EXPECT_NE(yoso_run::hash(P, P.params(tau, 6, 8)).q, c.q);
      }
    }
}

TEST(Yoso, HashGroupsGiveTheSameBits) {
  // Scratch budgets small enough that every hash is its own group. Within a row, forward and
  // ∂L/∂v contributions still arrive hash by hash (bitwise equal); for q and k the large
  // (factored) buckets are added per group instead of after all pairs, so only rounding differs.
  Problem<double> P(1, 2, 120, 100, 8, 6, 71, true);
  auto gout = testing_ref::normal_vector<double>(P.B * P.H * P.Nq * P.Dv, 72);
  for (int tau : {1, 5}) {
    auto p = P.params(tau, 9, 3, 2);
    auto c = yoso_run::hash(P, p);
    auto y = yoso_run::lsh_forward(P, p, c);
    auto g = yoso_run::lsh_backward(P, p, c, gout);
    auto saved = yoso_detail::group_budget();
    yoso_detail::group_budget() = yoso_detail::GroupBudget{1, 1};
    auto y1 = yoso_run::lsh_forward(P, p, c);
    auto g1 = yoso_run::lsh_backward(P, p, c, gout);
    yoso_detail::group_budget() = saved;
    EXPECT_EQ(y, y1);
    EXPECT_LE(rel_err(g1.q, g.q, 1e-12), 1.0);
    EXPECT_LE(rel_err(g1.k, g.k, 1e-12), 1.0);
    EXPECT_EQ(g.v, g1.v);
  }
}

TEST(Yoso, BitwiseDeterministicAcrossThreadCounts) {
  // Large enough (> 1 MFLOP per call) that the kernels do use several threads.
  Problem<float> P(2, 3, 400, 400, 16, 16, 3, true);
  auto gout = testing_ref::normal_vector<float>(P.B * P.H * P.Nq * P.Dv, 4);
  for (auto hashing : {YosoHashing::gaussian, YosoHashing::hadamard}) {
    std::vector<float> y1, g1, e1, ge1;
    for (int threads : {1, 2, 3}) {
      auto p = P.params(4, 16, 555, threads);
      p.hashing = hashing;
      auto c = yoso_run::hash(P, p);
      auto y = yoso_run::lsh_forward(P, p, c);
      auto g = yoso_run::lsh_backward(P, p, c, gout);
      auto e = yoso_run::expectation_forward(P, p);
      auto ge = yoso_run::expectation_backward(P, p, gout, YosoDerivative::exact);
      if (threads == 1) {
        y1 = y, g1 = g.k, e1 = e, ge1 = ge.k;
      } else {
        EXPECT_EQ(y, y1);
        EXPECT_EQ(g.k, g1);
        EXPECT_EQ(e, e1);
        EXPECT_EQ(ge.k, ge1);
      }
    }
  }
}

TEST(Yoso, MaskedRowsNeverContribute) {
  Problem<double> P(2, 2, 33, 33, 8, 4, 8, true);
  Problem<double> Q = P;  // scramble everything that is masked, including their output gradients
  auto gout = testing_ref::normal_vector<double>(P.B * P.H * P.Nq * P.Dv, 9);
  auto gout2 = gout;
  for (int64_t b = 0; b < P.B; ++b)
    for (int64_t h = 0; h < P.H; ++h)
      for (int64_t n = 0; n < P.Nk; ++n) {
        const int64_t r = (b * P.H + h) * P.Nk + n;
        if (!P.key_on(b, n)) {
          for (int64_t d = 0; d < P.D; ++d) Q.k[r * P.D + d] = 50.0 + d;
          for (int64_t d = 0; d < P.Dv; ++d) Q.v[r * P.Dv + d] = -40.0 * d;
        }
        if (!P.query_on(b, n)) {
          for (int64_t d = 0; d < P.D; ++d) Q.q[r * P.D + d] = 7.0;
          for (int64_t d = 0; d < P.Dv; ++d) gout2[r * P.Dv + d] = 1e3;
        }
      }
  auto p = P.params(2, 6, 1), q = Q.params(2, 6, 1);
  auto cp = yoso_run::hash(P, p), cq = yoso_run::hash(Q, q);
  EXPECT_EQ(yoso_run::lsh_forward(P, p, cp), yoso_run::lsh_forward(Q, q, cq));
  EXPECT_EQ(yoso_run::expectation_forward(P, p), yoso_run::expectation_forward(Q, q));
  auto g1 = yoso_run::lsh_backward(P, p, cp, gout), g2 = yoso_run::lsh_backward(Q, q, cq, gout2);
  auto e1 = yoso_run::expectation_backward(P, p, gout, YosoDerivative::exact);
  auto e2 = yoso_run::expectation_backward(Q, q, gout2, YosoDerivative::exact);
  // Unmasked rows' gradients are unchanged; masked rows' gradients are zero.
  for (const auto& [a, b] : {std::pair{&g1, &g2}, std::pair{&e1, &e2}}) {
    EXPECT_EQ(a->v, b->v);
    for (int64_t bb = 0; bb < P.B; ++bb)
      for (int64_t h = 0; h < P.H; ++h)
        for (int64_t n = 0; n < P.Nk; ++n)
          for (int64_t d = 0; d < P.D; ++d) {
            const int64_t idx = ((bb * P.H + h) * P.Nk + n) * P.D + d;
            if (P.key_on(bb, n)) EXPECT_EQ(a->k[idx], b->k[idx]);
            else EXPECT_EQ(b->k[idx], 0.0);
            if (P.query_on(bb, n)) EXPECT_EQ(a->q[idx], b->q[idx]);
            else EXPECT_EQ(b->q[idx], 0.0);
          }
  }
  auto y = yoso_run::expectation_forward(Q, q);
  for (int64_t b = 0; b < P.B; ++b)
    for (int64_t h = 0; h < P.H; ++h)
      for (int64_t n = 0; n < P.Nq; ++n)
        for (int64_t d = 0; d < P.Dv && !P.query_on(b, n); ++d) EXPECT_EQ(y[((b * P.H + h) * P.Nq + n) * P.Dv + d], 0.0);
}

TEST(Yoso, AllKeysMaskedAndZeroVectorsGiveZerosNotNaN) {
  Problem<float> P(1, 2, 10, 12, 8, 3, 12, true);
  std::fill(P.kmask.begin(), P.kmask.end(), 0);
  std::fill(P.q.begin(), P.q.begin() + 8 * 5, 0.0f);  // zero query rows: normalised to 0, no NaN
  auto gout = testing_ref::normal_vector<float>(P.B * P.H * P.Nq * P.Dv, 13);
  auto p = P.params(5, 4, 3);
  auto c = yoso_run::hash(P, p);
  for (float x : yoso_run::lsh_forward(P, p, c)) EXPECT_EQ(x, 0.0f);
  for (float x : yoso_run::expectation_forward(P, p)) EXPECT_EQ(x, 0.0f);
  for (auto& G : {yoso_run::lsh_backward(P, p, c, gout),
                  yoso_run::expectation_backward(P, p, gout, YosoDerivative::exact)})
    for (const auto* t : {&G.q, &G.k, &G.v})
      for (float x : *t) EXPECT_EQ(x, 0.0f);
  P.kmask.assign(P.kmask.size(), 1);  // keys back on: zero queries still finite
  for (auto& G : {yoso_run::lsh_backward(P, p, yoso_run::hash(P, p), gout),
                  yoso_run::expectation_backward(P, p, gout, YosoDerivative::exact)})
    for (float x : G.q) EXPECT_TRUE(std::isfinite(x));
}

TEST(Yoso, StridedInputsMatchContiguous) {
  // q, k, v stored as [B, N, H, D] and viewed as [B, H, N, D] through strides.
  Problem<float> P(2, 3, 40, 40, 8, 4, 21);
  auto transpose = [&](const std::vector<float>& x, int64_t N, int64_t D) {
    std::vector<float> t(x.size());
    for (int64_t b = 0; b < P.B; ++b)
      for (int64_t h = 0; h < P.H; ++h)
        for (int64_t n = 0; n < N; ++n)
          for (int64_t d = 0; d < D; ++d)
            t[((b * N + n) * P.H + h) * D + d] = x[((b * P.H + h) * N + n) * D + d];
    return t;
  };
  auto qt = transpose(P.q, P.Nq, P.D), kt = transpose(P.k, P.Nk, P.D), vt = transpose(P.v, P.Nk, P.Dv);
  auto p = P.params(3, 4, 17), s = p;
  s.q = BHND<const float>{qt.data(), P.B, P.H, P.Nq, P.D, P.Nq * P.H * P.D, P.D, P.H * P.D};
  s.k = BHND<const float>{kt.data(), P.B, P.H, P.Nk, P.D, P.Nk * P.H * P.D, P.D, P.H * P.D};
  s.v = BHND<const float>{vt.data(), P.B, P.H, P.Nk, P.Dv, P.Nk * P.H * P.Dv, P.Dv, P.H * P.Dv};
  auto c = yoso_run::hash(P, p);
  EXPECT_EQ(yoso_run::hash(P, s).k, c.k);
  EXPECT_EQ(yoso_run::lsh_forward(P, s, c), yoso_run::lsh_forward(P, p, c));
  EXPECT_EQ(yoso_run::expectation_forward(P, s), yoso_run::expectation_forward(P, p));
}
