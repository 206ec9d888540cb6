#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <algorithm>
#include <vector>

#include "kernels/common/blas.h"
#include "kernels/common/parallel.h"
#include "reference.h"

using namespace longattn::kernels;

TEST(Blas, GemmMatchesReferenceWithTransposes) {
  const int64_t M = 5, N = 7, K = 3;
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      auto A = testing_ref::random_vector<double>(M * K, 1);
      auto B = testing_ref::random_vector<double>(K * N, 2);
      std::vector<double> C(M * N, 1.0), R(M * N);
      for (int64_t i = 0; i < M; ++i)
        for (int64_t j = 0; j < N; ++j) {
          double s = 0;
          for (int64_t k = 0; k < K; ++k)
            s += (ta ? A[k * M + i] : A[i * K + k]) * (tb ? B[j * K + k] : B[k * N + j]);
          R[i * N + j] = 2.0 * s + 0.5;
        }
      gemm(ta, tb, M, N, K, 2.0, A.data(), ta ? M : K, B.data(), tb ? K : N, 0.5, C.data(), N);
      for (int64_t i = 0; i < M * N; ++i) EXPECT_NEAR(C[i], R[i], 1e-12);
    }
}

// The built-in GEMM (used where no OpenBLAS is built in) against an fp64 sum, with sizes that
// cross its block edges (256 columns and depth, 64 rows), strided operands (ld > used width),
// every transpose, and beta = 0 over NaN (overwritten, as BLAS does) or beta = 0.5.
template <typename T>
void check_builtin_gemm(double tol) {
  const int64_t M = 70, N = 261, K = 259, pad = 3;
  for (bool ta : {false, true})
    for (bool tb : {false, true})
      for (double beta : {0.0, 0.5}) {
        const int64_t lda = (ta ? M : K) + pad, ldb = (tb ? K : N) + pad, ldc = N + pad;
        auto A = testing_ref::random_vector<T>((ta ? K : M) * lda, 5);
        auto B = testing_ref::random_vector<T>((tb ? N : K) * ldb, 6);
        auto C0 = testing_ref::random_vector<T>(M * ldc, 7);
        if (beta == 0.0) std::fill(C0.begin(), C0.end(), std::numeric_limits<T>::quiet_NaN());
        std::vector<T> C = C0;
        builtin_gemm(ta, tb, M, N, K, T(1.5), A.data(), lda, B.data(), ldb, T(beta), C.data(), ldc);
        double worst = 0;
        for (int64_t i = 0; i < M; ++i)
          for (int64_t j = 0; j < N; ++j) {
            double s = 0, mag = 0;
            for (int64_t k = 0; k < K; ++k) {
              const double t = double(ta ? A[k * lda + i] : A[i * lda + k]) *
                               double(tb ? B[j * ldb + k] : B[k * ldb + j]);
              s += t;
              mag += std::fabs(t);
            }
            const double want = 1.5 * s + (beta == 0.0 ? 0.0 : beta * double(C0[i * ldc + j]));
            const double got = double(C[i * ldc + j]);
            ASSERT_TRUE(std::isfinite(got)) << i << "," << j;
            // K rounding steps of relative size eps on a sum of magnitude <= mag
            worst = std::max(worst, std::fabs(got - want) / (1.5 * mag + 1.0));
          }
        EXPECT_LT(worst, tol) << "ta=" << ta << " tb=" << tb << " beta=" << beta;
        // The padding columns of C are never written.
        for (int64_t i = 0; i < M; ++i)
          for (int64_t j = N; j < ldc; ++j)
            if (std::isnan(C0[i * ldc + j]))
              EXPECT_TRUE(std::isnan(C[i * ldc + j]));
            else
              EXPECT_EQ(C[i * ldc + j], C0[i * ldc + j]);
      }
}

TEST(Blas, BuiltinGemmMatchesFp64AcrossBlocks) {
  // Worst-case rounding of a K-term sum (K u, u = eps / 2) plus the scaling by alpha: K eps.
  check_builtin_gemm<float>(259 * double(std::numeric_limits<float>::epsilon()));
  check_builtin_gemm<double>(259 * std::numeric_limits<double>::epsilon());
}

TEST(Blas, BuiltinGemmHandlesEmptyAndZeroDepth) {
  std::vector<float> C(6, std::numeric_limits<float>::quiet_NaN());
  builtin_gemm(false, false, 2, 3, 0, 1.0f, nullptr, 1, nullptr, 3, 0.0f, C.data(), 3);
  for (float c : C) EXPECT_EQ(c, 0.0f);  // K = 0: C = beta * C, beta = 0 overwrites
  builtin_gemm(false, false, 0, 3, 4, 1.0f, nullptr, 4, nullptr, 3, 0.0f, nullptr, 3);  // no rows
}

TEST(Parallel, VisitsEveryIndexOnce) {
  std::vector<int> hits(1000, 0);
  parallel_for(1000, 2, [&](int64_t i) { hits[i] += 1; });
  for (int h : hits) EXPECT_EQ(h, 1);
}

// Concurrent GEMMs from the kernels' threads must not interfere (Debian's serial OpenBLAS
// 0.3.21 fails this: its buffer pool is unlocked).
TEST(Blas, ConcurrentCallsFromParallelForAreCorrect) {
  const int64_t M = 64, N = 128, K = 64, R = 400;
  auto A = testing_ref::random_vector<float>(M * K, 3);
  auto B = testing_ref::random_vector<float>(K * N, 4);
  std::vector<float> ref(M * N, 0.0f);
  gemm(false, false, M, N, K, 1.0f, A.data(), K, B.data(), N, 0.0f, ref.data(), N);
  std::vector<int> wrong(R, 0);
  parallel_for(R, 2, [&](int64_t r) {
    std::vector<float> C(M * N, -1.0f);
    gemm(false, false, M, N, K, 1.0f, A.data(), K, B.data(), N, 0.0f, C.data(), N);
    wrong[r] = C != ref;
  });
  int total = 0;
  for (int w : wrong) total += w;
  EXPECT_EQ(total, 0);
}
