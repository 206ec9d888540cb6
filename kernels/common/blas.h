// Thin, typed wrapper over CBLAS GEMM (OpenBLAS, one thread per call; or the built-in GEMM), called from inside
// the kernels' own parallel loops; safe to call from several threads at once. Row-major throughout.
#pragma once
#include <cstdint>

namespace longattn::kernels {

// C[M,N] = alpha * op(A) op(B) + beta * C, row-major, op = transpose when the flag is set.
// lda/ldb/ldc are the row strides of A, B and C as stored.
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
          const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
          int64_t ldc);
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, double alpha,
          const double* A, int64_t lda, const double* B, int64_t ldb, double beta, double* C,
          int64_t ldc);

// The built-in GEMM (same contract): cache-blocked and vectorised by the compiler, used by
// gemm() where the build has no OpenBLAS (a cross build for aarch64: LONGATTN_BLAS=builtin or
// auto, cmake/openblas.cmake). Always compiled, so every build tests it against a reference.
void builtin_gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                  const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
                  int64_t ldc);
void builtin_gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, double alpha,
                  const double* A, int64_t lda, const double* B, int64_t ldb, double beta,
                  double* C, int64_t ldc);

// Name and version of the BLAS in use, for `longattn info`.
const char* blas_backend();

}  // namespace longattn::kernels
