#include "kernels/common/blas.h"

#include <cblas.h>
#include <cstdio>

namespace longattn::kernels {

namespace {

CBLAS_TRANSPOSE tr(bool t) { return t ? CblasTrans : CblasNoTrans; }

// Our kernels parallelise around the GEMMs; each call must run on the calling thread only.
// (The pthread build keeps its own pool; one thread per call leaves it idle and makes the
// library reentrant for concurrent callers.)
void ensure_single_threaded() {
  static const bool once = [] {
    openblas_set_num_threads(1);
    return true;
  }();
  (void)once;
}

}  // namespace

void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
          const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
          int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  ensure_single_threaded();
  cblas_sgemm(CblasRowMajor, tr(trans_a), tr(trans_b), M, N, K, alpha, A, lda, B, ldb, beta, C,
              ldc);
}

void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, double alpha,
          const double* A, int64_t lda, const double* B, int64_t ldb, double beta, double* C,
          int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  ensure_single_threaded();
  cblas_dgemm(CblasRowMajor, tr(trans_a), tr(trans_b), M, N, K, alpha, A, lda, B, ldb, beta, C,
              ldc);
}

const char* blas_backend() {
  static const char* name = [] {
    static char buf[256];
    const char* cfg = openblas_get_config();
    ensure_single_threaded();
    snprintf(buf, sizeof buf, "OpenBLAS (%s; core %s; one thread per call)", cfg,
             openblas_get_corename());
    return buf;
  }();
  return name;
}

}  // namespace longattn::kernels
