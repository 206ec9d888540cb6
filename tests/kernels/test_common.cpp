#include <gtest/gtest.h>

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
