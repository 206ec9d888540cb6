// Shatter attention kernels against the dense fp64 reference (shatter_reference.h).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/shatter/shatter.h"
#include "reference.h"
#include "shatter_reference.h"

using namespace longattn::kernels;
using shatter_ref::Problem;

namespace {

struct Config {
  int64_t B, N, D, Dv, P;
  bool causal, sigmoid, padded;
};

// Random problem. The partition is random and positive (not normalised: the kernel must not
// rely on Σ_p = 1); padding masks out about a quarter of the keys and, in batch 0 of padded
// problems with B > 1, every key (fully masked rows).
Problem make_problem(const Config& c, uint64_t seed) {
  Problem pr;
  pr.B = c.B, pr.N = c.N, pr.D = c.D, pr.Dv = c.Dv, pr.P = c.P;
  pr.causal = c.causal, pr.sigmoid = c.sigmoid, pr.scale = 1.0 / std::sqrt(double(c.D));
  pr.q = testing_ref::normal_vector<double>(c.B * c.N * c.D, seed + 1, 1.5);
  pr.k = testing_ref::normal_vector<double>(c.B * c.N * c.D, seed + 2, 1.5);
  pr.v = testing_ref::normal_vector<double>(c.B * c.P * c.N * c.Dv, seed + 3);
  pr.partition = testing_ref::random_vector<double>(c.P * (2 * c.N - 1), seed + 4, 0.0, 1.0);
  if (c.padded) {
    auto u = testing_ref::random_vector<double>(c.B * c.N, seed + 5, 0.0, 1.0);
    pr.mask.resize(c.B * c.N);
    for (int64_t e = 0; e < c.B * c.N; ++e) pr.mask[e] = u[e] > 0.25;
    if (c.B > 1) std::fill(pr.mask.begin(), pr.mask.begin() + c.N, 0);
  }
  return pr;
}

struct Result {
  std::vector<double> out, lse, dq, dk, dv, dpart;
};

// Runs the kernels in precision T. `strided`: q and k live inside a [B, N, 3, D] buffer and v
// inside [B, N, P, Dv] (as when they are slices of one projection), the partition rows are
// padded; results are returned densely packed.
template <class T>
Result run(const Problem& pr, const std::vector<double>* grad_out, int threads = 2, bool strided = false) {
  const int64_t B = pr.B, N = pr.N, D = pr.D, Dv = pr.Dv, P = pr.P, R = 2 * N - 1;
  const int64_t qs = strided ? 3 : 1;
  std::vector<T> qb(B * N * qs * D), kb(B * N * qs * D), vb(B * N * P * Dv), partb(P * (R + 5));
  BHND<const T> q{qb.data(), B, 1, N, D, N * qs * D, 0, qs * D}, k{kb.data(), B, 1, N, D, N * qs * D, 0, qs * D};
  BHND<const T> v = strided ? BHND<const T>{vb.data(), B, P, N, Dv, N * P * Dv, Dv, P * Dv}
                            : BHND<const T>{vb.data(), B, P, N, Dv, P * N * Dv, N * Dv, Dv};
  const int64_t sp = strided ? R + 5 : R;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t n = 0; n < N; ++n) {
      for (int64_t d = 0; d < D; ++d) {
        const_cast<T*>(q.row(b, 0, n))[d] = T(pr.q[(b * N + n) * D + d]);
        const_cast<T*>(k.row(b, 0, n))[d] = T(pr.k[(b * N + n) * D + d]);
      }
      for (int64_t p = 0; p < P; ++p)
        for (int64_t d = 0; d < Dv; ++d) const_cast<T*>(v.row(b, p, n))[d] = T(pr.vrow(b, p, n)[d]);
    }
  for (int64_t p = 0; p < P; ++p)
    for (int64_t r = 0; r < R; ++r) partb[p * sp + r] = T(pr.partition[p * R + r]);
  ShatterParams<T> prm;
  prm.q = q, prm.k = k, prm.v = v, prm.partition = partb.data(), prm.partition_stride_p = sp;
  prm.key_padding_mask = pr.mask.empty() ? nullptr : pr.mask.data(), prm.mask_stride_b = N;
  prm.activation = pr.sigmoid ? ShatterActivation::sigmoid : ShatterActivation::softmax;
  prm.causal = pr.causal, prm.scale = pr.scale, prm.threads = threads;

  std::vector<T> out(B * N * Dv, T(-7)), lse(B * N, T(-7));  // junk: every element must be written
  auto out_v = BHND<T>::contiguous(out.data(), B, 1, N, Dv);
  shatter_forward(prm, out_v, lse.data());
  Result res;
  res.out.assign(out.begin(), out.end());
  res.lse.assign(lse.begin(), lse.end());
  if (!grad_out) return res;

  std::vector<T> g(grad_out->begin(), grad_out->end());
  std::vector<T> dq(B * N * D, T(-7)), dk(B * N * D, T(-7)), dv(B * P * N * Dv, T(-7)), dpart(P * R, T(-7));
  ShatterGrads<T> gr;
  gr.out = {out.data(), B, 1, N, Dv, N * Dv, 0, Dv};
  gr.grad_out = {g.data(), B, 1, N, Dv, N * Dv, 0, Dv};
  gr.lse = lse.data();
  gr.grad_q = BHND<T>::contiguous(dq.data(), B, 1, N, D);
  gr.grad_k = BHND<T>::contiguous(dk.data(), B, 1, N, D);
  gr.grad_v = BHND<T>::contiguous(dv.data(), B, P, N, Dv);
  gr.grad_partition = dpart.data();
  shatter_backward(prm, gr);
  res.dq.assign(dq.begin(), dq.end()), res.dk.assign(dk.begin(), dk.end());
  res.dv.assign(dv.begin(), dv.end()), res.dpart.assign(dpart.begin(), dpart.end());
  return res;
}

double max_abs(const std::vector<double>& x) {
  double m = 0;
  for (double e : x) m = std::max(m, std::abs(e));
  return m;
}

// |got - want| <= tol * (max|want| + 1) elementwise, NaN fails.
void expect_close(const std::vector<double>& got, const std::vector<double>& want, double tol, const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  const double bound = tol * (max_abs(want) + 1.0);
  double worst = 0;
  for (size_t e = 0; e < got.size(); ++e) {
    const double d = std::abs(got[e] - want[e]);
    worst = std::isnan(d) ? INFINITY : std::max(worst, d);
  }
  EXPECT_LE(worst, bound) << what;
}

const Config kConfigs[] = {
    // B, N, D, Dv, P, causal, sigmoid, padded
    {2, 1, 3, 2, 1, false, false, false},    {1, 7, 5, 3, 3, false, false, false},
    {2, 37, 8, 5, 4, true, false, false},    {3, 131, 16, 9, 3, false, false, true},
    {2, 200, 12, 7, 4, true, false, true},   {2, 37, 8, 5, 4, false, true, false},
    {3, 131, 16, 9, 3, true, true, true},    {1, 150, 4, 6, 1, false, true, true},
};

// Tolerances. double: the kernel and the reference differ only in summation order, so
// 1e-10 relative to the largest value leaves a wide margin over ~1e-13 rounding. float:
// each output is a sum of at most N * P * max(D, Dv) <= 6400 products rounded at 6e-8;
// 2e-4 of the largest magnitude covers the worst linear growth of that rounding (4e-4 of
// the summed magnitudes, which are below the largest output here by the softmax weights).
constexpr double kTolDouble = 1e-10, kTolFloat = 2e-4;

template <class T>
void check_against_reference(double tol) {
  uint64_t seed = 100;
  for (const Config& c : kConfigs) {
    SCOPED_TRACE(testing::Message() << "B=" << c.B << " N=" << c.N << " P=" << c.P << " causal=" << c.causal
                                    << " sigmoid=" << c.sigmoid << " padded=" << c.padded);
    const Problem pr = make_problem(c, seed += 10);
    const auto g = testing_ref::normal_vector<double>(c.B * c.N * c.Dv, seed + 9);
    const auto want = shatter_ref::forward(pr);
    const auto want_g = shatter_ref::backward(pr, g);
    for (bool strided : {false, true}) {
      const Result got = run<T>(pr, &g, 2, strided);
      expect_close(got.out, want, tol, "out");
      expect_close(got.dq, want_g.q, tol, "grad q");
      expect_close(got.dk, want_g.k, tol, "grad k");
      expect_close(got.dv, want_g.v, tol, "grad v");
      expect_close(got.dpart, want_g.partition, tol, "grad partition");
    }
  }
}

}  // namespace

TEST(Shatter, MatchesReferenceDouble) { check_against_reference<double>(kTolDouble); }
TEST(Shatter, MatchesReferenceFloat) { check_against_reference<float>(kTolFloat); }

// The double backward against central finite differences of the double forward, for every
// input, on the loss sum(out ⊙ g). Step 1e-5: truncation ~h² |f'''| ~ 1e-10 and rounding
// ~eps/h ~ 1e-11, so 1e-7 (relative to the largest gradient) separates a right gradient
// from a wrong one by orders of magnitude.
TEST(Shatter, GradientsMatchFiniteDifferences) {
  for (const Config& c : {Config{2, 9, 3, 2, 3, true, false, true}, Config{1, 11, 4, 3, 4, false, true, false},
                          Config{2, 6, 2, 3, 2, false, false, true}}) {
    SCOPED_TRACE(testing::Message() << "N=" << c.N << " causal=" << c.causal << " sigmoid=" << c.sigmoid);
    Problem pr = make_problem(c, 7);
    const auto g = testing_ref::normal_vector<double>(c.B * c.N * c.Dv, 8);
    const Result an = run<double>(pr, &g);
    auto loss = [&](const Problem& x) {
      const auto out = run<double>(x, nullptr, 1).out;  // one thread: many tiny calls
      double s = 0;
      for (size_t e = 0; e < out.size(); ++e) s += out[e] * g[e];
      return s;
    };
    auto fd = [&](std::vector<double> Problem::*field) {
      std::vector<double> grad((pr.*field).size());
      for (size_t e = 0; e < grad.size(); ++e) {
        const double h = 1e-5, x0 = (pr.*field)[e];
        (pr.*field)[e] = x0 + h;
        const double up = loss(pr);
        (pr.*field)[e] = x0 - h;
        const double dn = loss(pr);
        (pr.*field)[e] = x0;
        grad[e] = (up - dn) / (2 * h);
      }
      return grad;
    };
    expect_close(an.dq, fd(&Problem::q), 1e-7, "grad q");
    expect_close(an.dk, fd(&Problem::k), 1e-7, "grad k");
    expect_close(an.dv, fd(&Problem::v), 1e-7, "grad v");
    expect_close(an.dpart, fd(&Problem::partition), 1e-7, "grad partition");
  }
}

// P = 1 with a partition of ones is single-head softmax attention.
TEST(Shatter, OnePartOfOnesIsSoftmaxAttention) {
  for (bool causal : {false, true}) {
    Problem pr = make_problem({2, 150, 16, 8, 1, causal, false, true}, 31);
    std::fill(pr.partition.begin(), pr.partition.end(), 1.0);
    const auto want = shatter_ref::softmax_attention(pr);
    expect_close(run<double>(pr, nullptr).out, want, kTolDouble, "double");
    expect_close(run<float>(pr, nullptr).out, want, kTolFloat, "float");
  }
}

// Causal: changing keys and values after position t changes no output at or before t, and
// the outputs (and gradients) of a causal run never depend on the future bit for bit.
TEST(Shatter, CausalDoesNotLeak) {
  for (bool sigmoid : {false, true}) {
    Problem pr = make_problem({2, 300, 8, 4, 3, true, sigmoid, false}, 41);
    const int64_t t = 140;
    const auto before = run<float>(pr, nullptr).out;
    for (int64_t b = 0; b < pr.B; ++b)
      for (int64_t j = t + 1; j < pr.N; ++j) {
        for (int64_t d = 0; d < pr.D; ++d) pr.k[(b * pr.N + j) * pr.D + d] += 3.0;
        for (int64_t p = 0; p < pr.P; ++p)
          for (int64_t d = 0; d < pr.Dv; ++d) pr.v[((b * pr.P + p) * pr.N + j) * pr.Dv + d] *= -2.0;
      }
    const auto after = run<float>(pr, nullptr).out;
    for (int64_t b = 0; b < pr.B; ++b)
      for (int64_t i = 0; i <= t; ++i)
        for (int64_t d = 0; d < pr.Dv; ++d)
          ASSERT_EQ(before[(b * pr.N + i) * pr.Dv + d], after[(b * pr.N + i) * pr.Dv + d]) << "row " << i;
  }
}

// Padding: masked keys influence nothing, get zero gradients; rows with no key take part
// give zeros and -inf logsumexp (softmax) and contribute no gradient; no NaN anywhere.
TEST(Shatter, PaddingAndFullyMaskedRows) {
  for (bool sigmoid : {false, true}) {
    Problem pr = make_problem({3, 90, 8, 5, 3, false, sigmoid, true}, 51);  // batch 0 fully masked
    const auto g = testing_ref::normal_vector<double>(pr.B * pr.N * pr.Dv, 52);
    const Result a = run<float>(pr, &g);
    for (int64_t b = 0; b < pr.B; ++b)
      for (int64_t j = 0; j < pr.N; ++j) {
        if (pr.mask[b * pr.N + j]) continue;
        for (int64_t d = 0; d < pr.D; ++d) pr.k[(b * pr.N + j) * pr.D + d] = 50.0;
        for (int64_t p = 0; p < pr.P; ++p)
          for (int64_t d = 0; d < pr.Dv; ++d) pr.v[((b * pr.P + p) * pr.N + j) * pr.Dv + d] = 1e3;
      }
    const Result b2 = run<float>(pr, &g);
    EXPECT_EQ(a.out, b2.out);
    for (int64_t b = 0; b < pr.B; ++b)
      for (int64_t j = 0; j < pr.N; ++j) {
        if (pr.mask[b * pr.N + j]) continue;
        for (int64_t d = 0; d < pr.D; ++d) ASSERT_EQ(a.dk[(b * pr.N + j) * pr.D + d], 0.0);
        for (int64_t p = 0; p < pr.P; ++p)
          for (int64_t d = 0; d < pr.Dv; ++d) ASSERT_EQ(a.dv[((b * pr.P + p) * pr.N + j) * pr.Dv + d], 0.0);
      }
    for (int64_t e = 0; e < pr.N * pr.Dv; ++e) ASSERT_EQ(a.out[e], 0.0);  // batch 0
    for (int64_t e = 0; e < pr.N * pr.D; ++e) ASSERT_EQ(a.dq[e], 0.0);
    if (!sigmoid) {
      for (int64_t i = 0; i < pr.N; ++i) ASSERT_EQ(a.lse[i], -INFINITY);
    }
    for (const auto* x : {&a.out, &a.dq, &a.dk, &a.dv, &a.dpart})
      for (double e : *x) ASSERT_FALSE(std::isnan(e));
  }
}

// The same bits whatever the thread count (fixed-shape reductions).
TEST(Shatter, DeterministicAcrossThreadCounts) {
  for (int64_t B : {1, 3}) {
    const Problem pr = make_problem({B, 700, 8, 4, 4, false, false, true}, 61);
    const auto g = testing_ref::normal_vector<double>(B * pr.N * pr.Dv, 62);
    const Result one = run<float>(pr, &g, 1), two = run<float>(pr, &g, 2), three = run<float>(pr, &g, 3);
    for (const Result* r : {&two, &three}) {
      EXPECT_EQ(one.out, r->out);
      EXPECT_EQ(one.dq, r->dq);
      EXPECT_EQ(one.dk, r->dk);
      EXPECT_EQ(one.dv, r->dv);
      EXPECT_EQ(one.dpart, r->dpart);
    }
  }
}
