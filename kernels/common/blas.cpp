#include "kernels/common/blas.h"

#include <algorithm>
#include <cstdio>
#include <vector>

#if !defined(LONGATTN_BUILTIN_BLAS)
#include <cblas.h>
#endif

namespace longattn::kernels {

namespace {

// Block sizes of the built-in GEMM: a kc x nc panel of op(B) (256 x 256 floats: 256 KiB, in L2)
// is packed once and reused by every mc-row block of op(A) (64 x 256: 64 KiB); the inner loop
// runs along a packed row of B, contiguous, so the compiler vectorises it at any level.
constexpr int64_t kGemmKc = 256, kGemmNc = 256, kGemmMc = 64;

template <typename T>
void blocked_gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha,
                  const T* A, int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  // C = beta * C first; beta == 0 overwrites, so NaN or garbage in C never survives (as BLAS).
  for (int64_t i = 0; i < M; ++i) {
    T* c = C + i * ldc;
    if (beta == T(0))
      std::fill(c, c + N, T(0));
    else if (beta != T(1))
      for (int64_t j = 0; j < N; ++j) c[j] *= beta;
  }
  if (K <= 0 || alpha == T(0)) return;
  // Per-thread packing buffers: the kernels call gemm from their own parallel loops.
  thread_local std::vector<T> bpack, apack;
  bpack.resize(size_t(std::min(K, kGemmKc) * std::min(N, kGemmNc)));
  apack.resize(size_t(std::min(M, kGemmMc) * std::min(K, kGemmKc)));
  for (int64_t j0 = 0; j0 < N; j0 += kGemmNc) {
    const int64_t nb = std::min(kGemmNc, N - j0);
    for (int64_t p0 = 0; p0 < K; p0 += kGemmKc) {
      const int64_t kb = std::min(kGemmKc, K - p0);
      T* __restrict bp = bpack.data();  // op(B)[p0 + p][j0 + j] at bp[p * nb + j]
      for (int64_t p = 0; p < kb; ++p)
        for (int64_t j = 0; j < nb; ++j)
          bp[p * nb + j] = trans_b ? B[(j0 + j) * ldb + p0 + p] : B[(p0 + p) * ldb + j0 + j];
      for (int64_t i0 = 0; i0 < M; i0 += kGemmMc) {
        const int64_t mb = std::min(kGemmMc, M - i0);
        T* __restrict ap = apack.data();  // alpha * op(A)[i0 + i][p0 + p] at ap[i * kb + p]
        for (int64_t i = 0; i < mb; ++i)
          for (int64_t p = 0; p < kb; ++p)
            ap[i * kb + p] =
                alpha * (trans_a ? A[(p0 + p) * lda + i0 + i] : A[(i0 + i) * lda + p0 + p]);
        for (int64_t i = 0; i < mb; ++i) {
          T* __restrict c = C + (i0 + i) * ldc + j0;
          const T* a = ap + i * kb;
          for (int64_t p = 0; p < kb; ++p) {
            const T s = a[p];
            const T* __restrict b = bp + p * nb;
            for (int64_t j = 0; j < nb; ++j) c[j] += s * b[j];
          }
        }
      }
    }
  }
}

#if !defined(LONGATTN_BUILTIN_BLAS)
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
#endif

}  // namespace

void builtin_gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                  const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
                  int64_t ldc) {
  blocked_gemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void builtin_gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, double alpha,
                  const double* A, int64_t lda, const double* B, int64_t ldb, double beta,
                  double* C, int64_t ldc) {
  blocked_gemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

#if defined(LONGATTN_BUILTIN_BLAS)

void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
          const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
          int64_t ldc) {
  blocked_gemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, double alpha,
          const double* A, int64_t lda, const double* B, int64_t ldb, double beta, double* C,
          int64_t ldc) {
  blocked_gemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

const char* blas_backend() { return "built-in blocked GEMM (no OpenBLAS in this build)"; }

#else

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

#endif

}  // namespace longattn::kernels
