#include "kernels/common/blas.h"

#include <cblas.h>
#include <cstdio>
#include <mutex>

namespace longattn::kernels {

namespace {
CBLAS_TRANSPOSE tr(bool t) { return t ? CblasTrans : CblasNoTrans; }

// Debian's serial OpenBLAS (0.3.21, built without USE_LOCKING) is not safe to call from
// several threads at once: its packing-buffer table is claimed without a lock, and two
// concurrent GEMMs can share a buffer and return wrong results (reproduced: 2 OpenMP
// threads, M = N = 16..64, K = 3..8, hundreds of wrong products in 20000 calls). Until the
// build links a thread-safe OpenBLAS (openmp/pthread flavour, or USE_LOCKING=1), calls are
// serialised here. Test: BlasConcurrency in tests/kernels/test_kernelized_attention.cpp.
std::mutex& blas_mutex() {
  static std::mutex m;
  return m;
}
}  // namespace

void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
          const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
          int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  std::lock_guard<std::mutex> lock(blas_mutex());
  cblas_sgemm(CblasRowMajor, tr(trans_a), tr(trans_b), M, N, K, alpha, A, lda, B, ldb, beta, C,
              ldc);
}

void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, double alpha,
          const double* A, int64_t lda, const double* B, int64_t ldb, double beta, double* C,
          int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  std::lock_guard<std::mutex> lock(blas_mutex());
  cblas_dgemm(CblasRowMajor, tr(trans_a), tr(trans_b), M, N, K, alpha, A, lda, B, ldb, beta, C,
              ldc);
}

const char* blas_backend() {
  static const char* name = [] {
    static char buf[256];
    const char* cfg = openblas_get_config();
    int parallel = openblas_get_parallel();  // 0: serial build
    snprintf(buf, sizeof buf, "OpenBLAS (%s, %s, core %s)", cfg,
             parallel == 0 ? "serial" : "threaded", openblas_get_corename());
    return buf;
  }();
  return name;
}

}  // namespace longattn::kernels
