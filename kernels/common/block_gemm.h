// The small GEMM of the attention tiles (softmax attention, Shatter): C[m x n] = alpha * A B (+ C), single-threaded, no
// allocation, safe to call from many threads at once.
//
// Why not kernels::gemm (OpenBLAS): on this machine (AMD EPYC, full-width AVX-512) OpenBLAS 0.3.21
// runs the attention tile shapes at about 106 GFLOP/s per core, this register-blocked kernel at
// about 220; its epilogue is a template parameter, so the attention code fuses the softmax's
// elementwise work into it while the tile is still in registers; A is read through arbitrary
// strides, so transposed operands need no packing; and it is trivially reentrant (Debian's
// serial OpenBLAS is not: concurrent calls returned corrupted tiles).
//
// A(i, p) = A[i * a_rs + p * a_cs] (any strides: row-major, or transposed with a_rs = 1);
// B is row-major [k, n] with row stride ldb, its rows contiguous; C has row stride ldc.
#pragma once
#include <cstdint>

#include "kernels/common/simd.h"

namespace longattn::kernels {

// Portable version (double, and float without AVX-512): the innermost loop runs over n,
// contiguous in B and C, so the compiler vectorises it.
template <class T>
void block_gemm_generic(int64_t m, int64_t n, int64_t k, T alpha, const T* A, int64_t a_rs,
                        int64_t a_cs, const T* B, int64_t ldb, bool accumulate, T* C,
                        int64_t ldc) {
  for (int64_t i = 0; i < m; ++i) {
    T* c = C + i * ldc;
    if (!accumulate)
      for (int64_t j = 0; j < n; ++j) c[j] = T(0);
    for (int64_t p = 0; p < k; ++p) {
      const T a = alpha * A[i * a_rs + p * a_cs];
      const T* b = B + p * ldb;
      for (int64_t j = 0; j < n; ++j) c[j] += a * b[j];
    }
  }
}

#if defined(__AVX512F__)
// Epilogues run inside the unrolled register tile; a call there would spill every accumulator.
#define LONGATTN_ALWAYS_INLINE inline __attribute__((always_inline))

// The usual epilogue: C = alpha * AB (+ C). An epilogue receives every finished vector of the
// register tile: output row i, columns [j, j + 16), lanes outside `mask` not to be written.
// Other epilogues (the attention score tile) fuse their elementwise work here.
struct StoreEpilogue {
  float alpha;
  bool accumulate;
  float* C;
  int64_t ldc;
  LONGATTN_ALWAYS_INLINE void operator()(int64_t i, int64_t j, __m512 x, __mmask16 mask) const {
    float* c = C + i * ldc + j;
    x = _mm512_mul_ps(x, _mm512_set1_ps(alpha));
    if (accumulate) x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(mask, c));
    _mm512_mask_storeu_ps(c, mask, x);
  }
};

// Register tile: MR rows x NV vectors of 16 floats, kept in zmm accumulators over the whole
// k loop (MR * NV <= 24 of the 32 registers). Each step loads NV vectors of B and broadcasts
// MR scalars of A: 24 FMAs against 10 loads at the full 6 x 4 tile.
template <int MR, int NV, class Epilogue>
inline void micro_tile(int64_t k, const float* A, int64_t a_rs, int64_t a_cs, const float* B,
                       int64_t ldb, __mmask16 last, int64_t i0, int64_t j0, const Epilogue& epi) {
  // Every loop over r and v is unrolled, so GCC keeps acc in registers (without the pragmas it
  // spills the whole array to the stack on every k step).
  __m512 acc[MR][NV];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_ps();
  for (int64_t p = 0; p < k; ++p) {
    const float* b = B + p * ldb;
    __m512 bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV - 1; ++v) bv[v] = _mm512_loadu_ps(b + 16 * v);
    bv[NV - 1] = _mm512_maskz_loadu_ps(last, b + 16 * (NV - 1));
    const float* a = A + p * a_cs;
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const __m512 ar = _mm512_set1_ps(a[r * a_rs]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_fmadd_ps(ar, bv[v], acc[r][v]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v)
      epi(i0 + r, j0 + 16 * v, acc[r][v], v == NV - 1 ? last : __mmask16(0xFFFF));
}

template <int MR, class Epilogue>
inline void micro_row(int nv, int64_t k, const float* A, int64_t a_rs, int64_t a_cs,
                      const float* B, int64_t ldb, __mmask16 last, int64_t i0, int64_t j0,
                      const Epilogue& epi) {
  switch (nv) {
    case 1: return micro_tile<MR, 1>(k, A, a_rs, a_cs, B, ldb, last, i0, j0, epi);
    case 2: return micro_tile<MR, 2>(k, A, a_rs, a_cs, B, ldb, last, i0, j0, epi);
    case 3: return micro_tile<MR, 3>(k, A, a_rs, a_cs, B, ldb, last, i0, j0, epi);
    default: return micro_tile<MR, 4>(k, A, a_rs, a_cs, B, ldb, last, i0, j0, epi);
  }
}

// The product A B [m x n] over k, handed to `epi` vector by vector.
template <class Epilogue>
inline void block_gemm_apply(int64_t m, int64_t n, int64_t k, const float* A, int64_t a_rs,
                             int64_t a_cs, const float* B, int64_t ldb, const Epilogue& epi) {
  constexpr int64_t MR = 6, NR = 64;
  // Column panels of 64 outer, so the k x 64 panel of B stays in L1 across the row tiles.
  for (int64_t j0 = 0; j0 < n; j0 += NR) {
    const int64_t nj = n - j0 < NR ? n - j0 : NR;
    const int nv = static_cast<int>((nj + 15) / 16);
    const __mmask16 last = simd::tail_mask(nj - 16 * (nv - 1));
    const float* b = B + j0;
    int64_t i = 0;
    for (; i + MR <= m; i += MR)
      micro_row<MR>(nv, k, A + i * a_rs, a_rs, a_cs, b, ldb, last, i, j0, epi);
    const float* a = A + i * a_rs;
    switch (m - i) {
      case 1: micro_row<1>(nv, k, a, a_rs, a_cs, b, ldb, last, i, j0, epi); break;
      case 2: micro_row<2>(nv, k, a, a_rs, a_cs, b, ldb, last, i, j0, epi); break;
      case 3: micro_row<3>(nv, k, a, a_rs, a_cs, b, ldb, last, i, j0, epi); break;
      case 4: micro_row<4>(nv, k, a, a_rs, a_cs, b, ldb, last, i, j0, epi); break;
      case 5: micro_row<5>(nv, k, a, a_rs, a_cs, b, ldb, last, i, j0, epi); break;
      default: break;
    }
  }
}

inline void block_gemm(int64_t m, int64_t n, int64_t k, float alpha, const float* A,
                       int64_t a_rs, int64_t a_cs, const float* B, int64_t ldb, bool accumulate,
                       float* C, int64_t ldc) {
  block_gemm_apply(m, n, k, A, a_rs, a_cs, B, ldb, StoreEpilogue{alpha, accumulate, C, ldc});
}
#else
inline void block_gemm(int64_t m, int64_t n, int64_t k, float alpha, const float* A,
                       int64_t a_rs, int64_t a_cs, const float* B, int64_t ldb, bool accumulate,
                       float* C, int64_t ldc) {
  block_gemm_generic(m, n, k, alpha, A, a_rs, a_cs, B, ldb, accumulate, C, ldc);
}
#endif

inline void block_gemm(int64_t m, int64_t n, int64_t k, double alpha, const double* A,
                       int64_t a_rs, int64_t a_cs, const double* B, int64_t ldb, bool accumulate,
                       double* C, int64_t ldc) {
  block_gemm_generic(m, n, k, alpha, A, a_rs, a_cs, B, ldb, accumulate, C, ldc);
}

}  // namespace longattn::kernels
