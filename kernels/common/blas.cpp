#include "kernels/common/blas.h"

#include <cblas.h>
#include <cstdio>
#include <mutex>

namespace longattn::kernels {

namespace {
CBLAS_TRANSPOSE tr(bool t) { return t ? CblasTrans : CblasNoTrans; }

// STOPGAP (shatter branch, to be replaced project-wide): Debian's serial OpenBLAS 0.3.21
// (libopenblas-serial, built without USE_LOCKING) is not safe to call from two threads at
// once: its GEMM buffer pool has no lock, and concurrent sgemm calls from an OpenMP loop
// return wrong results (629 wrong of 12800 64x128x64 products in a 2-thread test). The
// OpenMP flavour (libopenblas-openmp-dev, with openblas_set_num_threads(1)) is safe (0 of
// 12800). Until the build links that, calls into a serial build are serialised here:
// correct, but the GEMMs of parallel kernels then do not run in parallel.
std::mutex& serial_blas_lock() {
  static std::mutex m;
  return m;
}
bool blas_is_serial_build() {
  static const bool serial = openblas_get_parallel() == 0;
  return serial;
}
struct BlasGuard {
  std::unique_lock<std::mutex> lock;
  BlasGuard() {
    if (blas_is_serial_build()) lock = std::unique_lock<std::mutex>(serial_blas_lock());
  }
};
}  // namespace

void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
          const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
          int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  BlasGuard guard;
  cblas_sgemm(CblasRowMajor, tr(trans_a), tr(trans_b), M, N, K, alpha, A, lda, B, ldb, beta, C,
              ldc);
}

void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, double alpha,
          const double* A, int64_t lda, const double* B, int64_t ldb, double beta, double* C,
          int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  BlasGuard guard;
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
