// The small GEMM of the attention tiles (softmax attention, Shatter): C[m x n] = alpha * A B (+ C), single-threaded, no
// allocation, safe to call from many threads at once.
//
// Why not kernels::gemm (OpenBLAS): on an AMD EPYC with full-width AVX-512, OpenBLAS 0.3.21
// ran the attention tile shapes at about 106 GFLOP/s per core, this register-blocked kernel at
// about 220 (AVX2 figures: BENCHMARKS.md); its epilogue is a template parameter, so the attention code fuses the softmax's
// elementwise work into it while the tile is still in registers; A is read through arbitrary
// strides, so transposed operands need no packing; and it is trivially reentrant (Debian's
// serial OpenBLAS is not: concurrent calls returned corrupted tiles).
//
// A(i, p) = A[i * a_rs + p * a_cs] (any strides: row-major, or transposed with a_rs = 1);
// B is row-major [k, n] with row stride ldb, its rows contiguous; C has row stride ldc.
#pragma once
#include "kernels/common/isa_namespace.h"
#include <cstdint>

#include "kernels/common/simd.h"

namespace longattn::kernels {
LONGATTN_ISA_BEGIN

// Portable version (double, and float without a vector level): the innermost loop runs over n,
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

#if defined(LONGATTN_SIMD_HAS_VECF)
// Float with a vector level (AVX-512 or AVX2: simd::VecF), written once for both.
// Epilogues run inside the unrolled register tile; a call there would spill every accumulator.
#define LONGATTN_ALWAYS_INLINE inline __attribute__((always_inline))

using simd::VecF;

// Register tile: MR rows x NV vectors, kept in accumulators over the whole k loop. Each step
// loads NV vectors of B and broadcasts MR scalars of A. AVX-512 (32 registers): 6 x 4 vectors,
// 24 FMAs against 10 loads. AVX2 (16 registers): 6 x 2 vectors, 12 accumulators + 2 + 1 live,
// the classic Haswell sgemm shape.
constexpr int kTileRows = 6;
constexpr int kTileVecs = VecF::kRegisters >= 32 ? 4 : 2;
constexpr int64_t kPanelCols = kTileVecs * VecF::kLanes;

// The usual epilogue: C = alpha * AB (+ C). An epilogue receives every finished vector of the
// register tile: output row i, columns [j, j + lanes), lanes outside `mask` not to be written.
// Other epilogues (the attention score tile) fuse their elementwise work here.
struct StoreEpilogue {
  float alpha;
  bool accumulate;
  float* C;
  int64_t ldc;
  LONGATTN_ALWAYS_INLINE void operator()(int64_t i, int64_t j, VecF::Reg x, VecF::Mask mask) const {
    float* c = C + i * ldc + j;
    x = VecF::mul(x, VecF::set1(alpha));
    if (accumulate) x = VecF::add(x, VecF::load(c, mask));
    VecF::store(c, x, mask);
  }
};

// Tail: the last of the NV vectors is partial (loaded under `last`); otherwise every load is a
// plain one, which AVX2's masked loads would slow down.
template <int MR, int NV, bool Tail, class Epilogue>
inline void micro_tile(int64_t k, const float* A, int64_t a_rs, int64_t a_cs, const float* B,
                       int64_t ldb, VecF::Mask last, int64_t i0, int64_t j0, const Epilogue& epi) {
  // Every loop over r and v is unrolled, so GCC keeps acc in registers (without the pragmas it
  // spills the whole array to the stack on every k step).
  VecF::Reg acc[MR][NV];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[r][v] = VecF::zero();
  for (int64_t p = 0; p < k; ++p) {
    const float* b = B + p * ldb;
    VecF::Reg bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV - 1; ++v) bv[v] = VecF::load(b + VecF::kLanes * v);
    bv[NV - 1] = Tail ? VecF::load(b + VecF::kLanes * (NV - 1), last)
                      : VecF::load(b + VecF::kLanes * (NV - 1));
    const float* a = A + p * a_cs;
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const VecF::Reg ar = VecF::set1(a[r * a_rs]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[r][v] = VecF::fmadd(ar, bv[v], acc[r][v]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v)
      epi(i0 + r, j0 + VecF::kLanes * v, acc[r][v], v == NV - 1 ? last : VecF::full());
}

template <int MR, bool Tail, class Epilogue>
inline void micro_row(int nv, int64_t k, const float* A, int64_t a_rs, int64_t a_cs,
                      const float* B, int64_t ldb, VecF::Mask last, int64_t i0, int64_t j0,
                      const Epilogue& epi) {
  if constexpr (kTileVecs == 4) {
    switch (nv) {
      case 1: return micro_tile<MR, 1, Tail>(k, A, a_rs, a_cs, B, ldb, last, i0, j0, epi);
      case 2: return micro_tile<MR, 2, Tail>(k, A, a_rs, a_cs, B, ldb, last, i0, j0, epi);
      case 3: return micro_tile<MR, 3, Tail>(k, A, a_rs, a_cs, B, ldb, last, i0, j0, epi);
      default: return micro_tile<MR, 4, Tail>(k, A, a_rs, a_cs, B, ldb, last, i0, j0, epi);
    }
  } else {
    if (nv == 1) return micro_tile<MR, 1, Tail>(k, A, a_rs, a_cs, B, ldb, last, i0, j0, epi);
    return micro_tile<MR, 2, Tail>(k, A, a_rs, a_cs, B, ldb, last, i0, j0, epi);
  }
}

template <bool Tail, class Epilogue>
inline void micro_panel(int64_t m, int nv, int64_t k, const float* A, int64_t a_rs, int64_t a_cs,
                        const float* b, int64_t ldb, VecF::Mask last, int64_t j0,
                        const Epilogue& epi) {
  constexpr int MR = kTileRows;
  int64_t i = 0;
  for (; i + MR <= m; i += MR)
    micro_row<MR, Tail>(nv, k, A + i * a_rs, a_rs, a_cs, b, ldb, last, i, j0, epi);
  const float* a = A + i * a_rs;
  switch (m - i) {
    case 1: micro_row<1, Tail>(nv, k, a, a_rs, a_cs, b, ldb, last, i, j0, epi); break;
    case 2: micro_row<2, Tail>(nv, k, a, a_rs, a_cs, b, ldb, last, i, j0, epi); break;
    case 3: micro_row<3, Tail>(nv, k, a, a_rs, a_cs, b, ldb, last, i, j0, epi); break;
    case 4: micro_row<4, Tail>(nv, k, a, a_rs, a_cs, b, ldb, last, i, j0, epi); break;
    case 5: micro_row<5, Tail>(nv, k, a, a_rs, a_cs, b, ldb, last, i, j0, epi); break;
    default: break;
  }
}

// The product A B [m x n] over k, handed to `epi` vector by vector.
template <class Epilogue>
inline void block_gemm_apply(int64_t m, int64_t n, int64_t k, const float* A, int64_t a_rs,
                             int64_t a_cs, const float* B, int64_t ldb, const Epilogue& epi) {
  // Column panels outer, so the k x panel slice of B stays in L1 across the row tiles.
  for (int64_t j0 = 0; j0 < n; j0 += kPanelCols) {
    const int64_t nj = n - j0 < kPanelCols ? n - j0 : kPanelCols;
    const int nv = static_cast<int>((nj + VecF::kLanes - 1) / VecF::kLanes);
    const VecF::Mask last = VecF::tail(nj - VecF::kLanes * (nv - 1));
    if (VecF::is_full(last))
      micro_panel<false>(m, nv, k, A, a_rs, a_cs, B + j0, ldb, last, j0, epi);
    else
      micro_panel<true>(m, nv, k, A, a_rs, a_cs, B + j0, ldb, last, j0, epi);
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

LONGATTN_ISA_END
}  // namespace longattn::kernels
