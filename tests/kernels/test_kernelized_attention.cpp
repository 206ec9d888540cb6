#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "kernels/common/blas.h"
#include "kernels/common/parallel.h"
#include "kernelized_reference.h"

using longattn::kernels::FeatureMap;
using namespace kernelized_ref;

namespace {

const FeatureMap kMaps[] = {FeatureMap::elu, FeatureMap::relu, FeatureMap::sikf,
                            FeatureMap::favor};

std::string name_of(FeatureMap f) { return longattn::kernels::feature_map_name(f); }

// Forward error bound, in units of max|v| (every output is a convex combination of the v
// rows, so absolute errors scale with max|v|). A weight w_ij is a sum of m non-negative
// products of features; each feature carries a relative error of about u (1 + |exponent|)
// from exp of a rounded argument, the m-term and N-term sums of non-negative numbers add at
// most (m + N) u, and z = num / den doubles that. For favor the exponent omega.x - |x|^2/2
// itself is a D-term sum with absolute rounding error <= D u sum|omega_r||x| (bounded below
// by max|exponent| terms). The bound uses the worst case, times a safety factor 2.
template <class T>
double forward_tolerance(const Problem& p) {
  const double u = std::numeric_limits<T>::epsilon() / 2;
  double x_max = 0, om_max = 0;
  for (double x : p.q) x_max = std::max(x_max, std::abs(x));
  for (double x : p.k) x_max = std::max(x_max, std::abs(x));
  for (double x : p.omega) om_max = std::max(om_max, std::abs(x));
  double exponent = 2 * x_max;  // sikf/elu: |x - c| <= 2 max|x|
  if (p.fm == FeatureMap::favor) exponent = 2 * p.D * (om_max * x_max + x_max * x_max);
  return 2 * 2 * u * (p.features() + p.Nk + 4 * exponent + 8);
}

}  // namespace

// Every feature map, causal or not, with and without padding, D in {1, 7, 64}, N in
// {1, 97, 1025}, both dtypes, against the fp64 dense reference.
TEST(KernelizedAttention, ForwardMatchesDenseReference) {
  for (int64_t N : {1, 97, 1025})
    for (int64_t D : {1, 7, 64})
      for (FeatureMap fm : kMaps)
        for (bool causal : {false, true})
          for (bool masked : {false, true}) {
            const int64_t B = N > 100 ? 1 : 2, H = N > 100 ? 1 : 2;
            const int64_t Dv = D == 64 ? 16 : D + 2;
            Problem p = make_problem(fm, causal, masked, B, H, N, D, Dv, 100 + N + D);
            if (fm == FeatureMap::favor) p.m = D == 64 ? 32 : p.m;  // keep the reference small
            if (fm == FeatureMap::favor)
              p.omega = testing_ref::normal_vector<double>(
                  (p.per_head_projection ? H : 1) * p.m * D, 7 + D);
            const auto ref = reference(p);
            const auto of = run_kernel<float>(p).out;
            const auto od = run_kernel<double>(p).out;
            const std::string what = name_of(fm) + (causal ? " causal" : "") +
                                     (masked ? " masked" : "") + " N=" + std::to_string(N) +
                                     " D=" + std::to_string(D);
            EXPECT_LE(testing_ref::max_scaled_error(of, ref, forward_tolerance<float>(p), 0), 1)
                << what;
            EXPECT_LE(testing_ref::max_scaled_error(od, ref, forward_tolerance<double>(p), 0), 1)
                << what;
          }
}

// Strided inputs ([B, N, H, D] memory), several chunk lengths and thread counts give the
// same result as the contiguous default (chunking changes only the summation order).
TEST(KernelizedAttention, StridesChunksAndThreads) {
  for (FeatureMap fm : kMaps)
    for (bool causal : {false, true}) {
      Problem p = make_problem(fm, causal, true, 2, 3, 77, 5, 4, 11);
      const auto ref = reference(p);
      const auto base = run_kernel<double>(p, nullptr, 1);
      for (int64_t chunk : {1, 7, 64})
        for (bool bnhd : {false, true}) {
          const auto r = run_kernel<double>(p, nullptr, 3, chunk, bnhd);
          EXPECT_LE(testing_ref::max_scaled_error(r.out, ref, 1e-12, 0), 1) << name_of(fm);
        }
      // Same inputs and chunk, different thread counts: bit for bit (a problem large enough
      // for the kernel to start threads at all).
      Problem big = make_problem(fm, causal, true, 2, 3, 1100, 16, 16, 12);
      const auto g = testing_ref::random_vector<double>(big.B * big.H * big.Nq * big.Dv, 13);
      const auto t1 = run_kernel<float>(big, &g, 1), t3 = run_kernel<float>(big, &g, 3);
      for (auto [a, b] : {std::pair{&t1.out, &t3.out}, {&t1.gq, &t3.gq}, {&t1.gk, &t3.gk},
                          {&t1.gv, &t3.gv}})
        EXPECT_EQ(0, std::memcmp(a->data(), b->data(), a->size() * sizeof(double)));
    }
}

// Gradients of L = sum(out * G) against central finite differences in fp64, for every map,
// causal (several chunks) or not, with a padding mask (including rows with no key), eps = 0
// and a large eps = 0.3 (which makes the path through the stabilising maxima matter).
// Error of a central difference: h^2/6 |L'''| + u |L| / h ~ 1e-12 + 1e-10 with h = 1e-6 and
// |L| ~ 1; the tolerance 1e-7 (relative to max(1, |g|)) leaves a wide margin.
TEST(KernelizedAttention, GradientsMatchFiniteDifferences) {
  for (FeatureMap fm : kMaps)
    for (bool causal : {false, true})
      for (double eps : {0.0, 0.3}) {
        Problem p = make_problem(fm, causal, true, 2, 2, 11, 3, 2, 21 + int(causal));
        p.mask[3] = 1;  // batch 0 keeps some keys; batch 1 has none
        p.eps = eps;
        const auto G = testing_ref::random_vector<double>(p.B * p.H * p.Nq * p.Dv, 5);
        const auto r = run_kernel<double>(p, &G, 2, 4);
        // The backward that recomputes the denominators agrees with the one that reuses them.
        const auto r2 = run_kernel<double>(p, &G, 2, 4, false, false);
        EXPECT_LE(testing_ref::max_scaled_error(r2.gq, r.gq, 1e-12, 1e-12), 1);
        EXPECT_LE(testing_ref::max_scaled_error(r2.gk, r.gk, 1e-12, 1e-12), 1);
        EXPECT_LE(testing_ref::max_scaled_error(r2.gv, r.gv, 1e-12, 1e-12), 1);
        auto loss = [&](const Problem& pp) {
          const auto o = run_kernel<double>(pp, nullptr, 1, 4).out;
          double s = 0;
          for (size_t i = 0; i < o.size(); ++i) s += o[i] * G[i];
          return s;
        };
        const double h = 1e-6;
        auto check = [&](std::vector<double> Problem::*field, const std::vector<double>& grad,
                         const char* which) {
          for (size_t i = 0; i < grad.size(); ++i) {
            Problem pp = p;
            (pp.*field)[i] += h;
            const double lp = loss(pp);
            (pp.*field)[i] -= 2 * h;
            const double fd = (lp - loss(pp)) / (2 * h);
            ASSERT_NEAR(grad[i], fd, 1e-7 * std::max(1.0, std::abs(fd)))
                << name_of(fm) << (causal ? " causal" : "") << " eps=" << eps << " d" << which
                << "[" << i << "]";
          }
        };
        check(&Problem::q, r.gq, "q");
        check(&Problem::k, r.gk, "k");
        check(&Problem::v, r.gv, "v");
      }
}

// Causal: changing q, k, v or the mask at positions j > i leaves out[0..i] identical bit for
// bit, for several chunk lengths (the cut falls inside a chunk and on a boundary). Keys are
// changed by up to +-60 so that the future maxima move.
TEST(KernelizedAttention, CausalNoLeakBitForBit) {
  for (FeatureMap fm : kMaps)
    for (int64_t chunk : {0, 16})
      for (int64_t cut : {63, 77}) {
        Problem p = make_problem(fm, true, true, 1, 2, 150, 8, 5, 31);
        const auto base = run_kernel<float>(p, nullptr, 2, chunk).out;
        Problem pp = p;
        const auto noise = testing_ref::random_vector<double>(p.q.size(), 9, -60, 60);
        for (int64_t h = 0; h < p.H; ++h)
          for (int64_t j = cut + 1; j < p.Nk; ++j) {
            for (int64_t d = 0; d < p.D; ++d) {
              pp.q[(h * p.Nq + j) * p.D + d] = noise[(h * p.Nq + j) * p.D + d] / 10;
              pp.k[(h * p.Nk + j) * p.D + d] = noise[(h * p.Nk + j) * p.D + d];
            }
            for (int64_t d = 0; d < p.Dv; ++d) pp.v[(h * p.Nk + j) * p.Dv + d] *= -7;
            pp.mask[j] = !pp.mask[j];
          }
        const auto changed = run_kernel<float>(pp, nullptr, 2, chunk).out;
        for (int64_t h = 0; h < p.H; ++h) {
          const size_t at = h * p.Nq * p.Dv, len = (cut + 1) * p.Dv;
          EXPECT_EQ(0, std::memcmp(base.data() + at, changed.data() + at, len * sizeof(float)))
              << name_of(fm) << " chunk " << chunk << " cut " << cut;
        }
      }
}

// A query with no key taking part outputs zeros (and zero gradients), never NaN, eps = 0 too.
TEST(KernelizedAttention, NoKeyGivesZeros) {
  for (FeatureMap fm : kMaps)
    for (bool causal : {false, true}) {
      Problem p = make_problem(fm, causal, true, 2, 2, 40, 4, 3, 41);
      p.eps = 0;
      const auto G = testing_ref::random_vector<double>(p.B * p.H * p.Nq * p.Dv, 6);
      const auto r = run_kernel<float>(p, &G);
      for (size_t i = p.H * p.Nq * p.Dv; i < r.out.size(); ++i) ASSERT_EQ(r.out[i], 0.0);
      for (int64_t i = 0; i < p.Dv; ++i) ASSERT_EQ(r.out[i], causal ? 0.0 : r.out[i]);
      for (auto* g : {&r.gq, &r.gk, &r.gv})
        for (size_t i = g->size() / 2; i < g->size(); ++i) ASSERT_EQ((*g)[i], 0.0);
      for (auto* g : {&r.out, &r.gq, &r.gk, &r.gv})
        for (double x : *g) ASSERT_TRUE(std::isfinite(x));
    }
}

// A denominator below float's normal range (relu features of subnormal keys, eps = 0) has a
// reciprocal that overflows: the kernel multiplied the numerator by inf and wrote inf/NaN.
// Found by the kernel fuzzer (docs/fuzzing.md). Such a denominator now counts as zero, as an
// underflow does (kernelized_attention.h): finite outputs and gradients, inv_denom 0.
TEST(KernelizedAttention, SubnormalDenominatorGivesFiniteOutputs) {
  for (bool causal : {false, true}) {
    Problem p = make_problem(FeatureMap::relu, causal, false, 1, 2, 73, 4, 23, 51);
    p.eps = 0;
    for (double& x : p.k) x *= 1e-41;  // float subnormals: every weight is ~1e-41
    const auto G = testing_ref::random_vector<double>(p.B * p.H * p.Nq * p.Dv, 52);
    const auto r = run_kernel<float>(p, &G);
    for (auto* g : {&r.out, &r.gk, &r.gv})
      for (double x : *g) ASSERT_TRUE(std::isfinite(x)) << "causal=" << causal;
  }
}

// SIKF is shift invariant: a constant added to one query row, or to every key of one head,
// leaves the output unchanged up to rounding (the exponents x - c are then computed from
// rounded x + a, |x + a| <= 6: relative weight change <= 2 * 6 u, so 1e-5 max|v| is ample in
// float). With |x| up to 80 everything stays finite.
TEST(KernelizedAttention, SikfShiftInvarianceAndLargeInputs) {
  for (bool causal : {false, true}) {
    Problem p = make_problem(FeatureMap::sikf, causal, true, 1, 2, 90, 6, 4, 51);
    const auto base = run_kernel<float>(p).out;
    Problem pq = p;
    for (int64_t d = 0; d < p.D; ++d) pq.q[(1 * p.Nq + 17) * p.D + d] += 5.0;  // head 1, row 17
    Problem pk = p;
    for (int64_t j = 0; j < p.Nk; ++j)
      for (int64_t d = 0; d < p.D; ++d) pk.k[(0 * p.Nk + j) * p.D + d] -= 4.5;  // all of head 0
    EXPECT_LE(testing_ref::max_scaled_error(run_kernel<float>(pq).out, base, 1e-5, 0), 1);
    EXPECT_LE(testing_ref::max_scaled_error(run_kernel<float>(pk).out, base, 1e-5, 0), 1);
    // elu+1 is not shift invariant: the same key shift must change its output (the check
    // above can fail).
    Problem e = p, ek = pk;
    e.fm = ek.fm = FeatureMap::elu;
    EXPECT_GT(testing_ref::max_scaled_error(run_kernel<float>(ek).out, run_kernel<float>(e).out,
                                            1e-5, 0), 1);

    Problem big = make_problem(FeatureMap::sikf, causal, true, 1, 2, 90, 6, 4, 52, 80.0);
    const auto G = testing_ref::random_vector<double>(big.B * big.H * big.Nq * big.Dv, 7);
    const auto r = run_kernel<float>(big, &G);
    for (auto* g : {&r.out, &r.gq, &r.gk, &r.gv})
      for (double x : *g) ASSERT_TRUE(std::isfinite(x));
  }
}

// The feature-map name table round-trips and rejects unknown names.
TEST(KernelizedAttention, FeatureMapNames) {
  for (FeatureMap fm : kMaps) {
    FeatureMap back;
    ASSERT_TRUE(longattn::kernels::feature_map_from_name(name_of(fm).c_str(), &back));
    EXPECT_EQ(back, fm);
  }
  FeatureMap none;
  EXPECT_FALSE(longattn::kernels::feature_map_from_name("softmax", &none));
}

// kernels::gemm is called from inside parallel_for by every kernel: concurrent calls must
// give the same bits as one call alone. Debian's serial OpenBLAS 0.3.21 failed this (its
// buffer table is claimed without a lock; about 1 run in 3 of this test caught it), which
// is why the build links the pthread flavour with one thread per call.
TEST(BlasConcurrency, ConcurrentGemmsAreCorrect) {
  const int64_t M = 64, N = 65, K = 4;
  const auto A = testing_ref::random_vector<float>(M * K, 1);
  const auto B = testing_ref::random_vector<float>(K * N, 2);
  std::vector<float> want(M * N);
  longattn::kernels::gemm(false, true, M, N, K, 1.f, A.data(), K, B.data(), K, 0.f, want.data(), N);
  std::vector<int> wrong(2, 0);
  longattn::kernels::parallel_for(2, 2, [&](int64_t t) {
    std::vector<float> C(M * N);
    for (int it = 0; it < 20000; ++it) {
      longattn::kernels::gemm(false, true, M, N, K, 1.f, A.data(), K, B.data(), K, 0.f, C.data(),
                              N);
      wrong[t] += std::memcmp(C.data(), want.data(), C.size() * sizeof(float)) != 0;
    }
  });
  for (int w : wrong) EXPECT_EQ(w, 0);
}

// A NaN or inf in a later key or value never reaches an earlier row, in the forward or in the
// gradient of an earlier query (only earlier outputs carry a gradient here): the causal scan
// takes a chunk's keys as one block, whose products would otherwise multiply the zero weights of
// the future keys (0 * inf = NaN). pos = 100 sits inside the second 64-row chunk, after earlier
// rows of that chunk.
TEST(KernelizedAttention, CausalFutureNonFiniteNeverReachesEarlierRows) {
  const int64_t N = 150, D = 4, Dv = 3, pos = 100;
  for (FeatureMap fm : kMaps)
    for (bool in_v : {false, true})
      for (double value : {double(NAN), double(INFINITY), -double(INFINITY)})
        for (bool save_denominators : {true, false}) {
          Problem clean = make_problem(fm, true, false, 1, 2, N, D, Dv, 31);
          Problem dirty = clean;
          for (int64_t h = 0; h < 2; ++h) {
            if (in_v) dirty.v[size_t((h * N + pos) * Dv + 1)] = value;
            else dirty.k[size_t((h * N + pos) * D + 1)] = value;
          }
          std::vector<double> gout = testing_ref::normal_vector<double>(2 * N * Dv, 5);
          for (int64_t h = 0; h < 2; ++h)
            for (int64_t i = pos; i < N; ++i)
              for (int64_t e = 0; e < Dv; ++e) gout[size_t((h * N + i) * Dv + e)] = 0;
          const auto a = run_kernel<float>(clean, &gout, 2, 64, false, save_denominators);
          const auto b = run_kernel<float>(dirty, &gout, 2, 64, false, save_denominators);
          const std::string what = name_of(fm) + (in_v ? " v" : " k") + " = " + std::to_string(value);
          for (int64_t h = 0; h < 2; ++h)
            for (int64_t i = 0; i < pos; ++i) {
              for (int64_t e = 0; e < Dv; ++e) {
                const size_t x = size_t((h * N + i) * Dv + e);
                ASSERT_TRUE(std::isfinite(b.out[x])) << what << " out row " << i;
                ASSERT_NEAR(b.out[x], a.out[x], 1e-5 * (1 + std::abs(a.out[x]))) << what << " out row " << i;
              }
              for (int64_t d = 0; d < D; ++d) {
                const size_t x = size_t((h * N + i) * D + d);
                ASSERT_TRUE(std::isfinite(b.gq[x])) << what << " dq row " << i;
                ASSERT_NEAR(b.gq[x], a.gq[x], 1e-5 * (1 + std::abs(a.gq[x]))) << what << " dq row " << i;
              }
            }
        }
}
