// Products that skip zero weights, for tiles that causal masking cuts while the inputs hold inf
// or NaN. A forbidden (query i, key j) pair has weight 0, but a GEMM still multiplies it in, and
// 0 * inf = NaN: an inf or NaN in a later key's row would reach an earlier query's output. The
// attention kernels check the rows a cut tile reads (O((ni + nj) D) against the tile's
// O(ni nj D)) and only then take these products instead of the GEMMs; such tiles are rare (the
// inputs hold non-finite values, so some outputs are NaN anyway, rightly).
#pragma once
#include "kernels/common/isa_namespace.h"
#include <cmath>
#include <cstdint>

namespace longattn::kernels {
LONGATTN_ISA_BEGIN

// Whether the rows x[r * stride + c], r < rows, c < cols, are all finite.
template <class T>
bool rows_finite(const T* x, int64_t rows, int64_t stride, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      if (!std::isfinite(x[r * stride + c])) return false;
  return true;
}

// O[c * ldo + e] += sum over the keys r < nj with w(r, c) != 0 of w(r, c) v[r * v_sn + e], for
// queries c < ni and e < Dv, where w(r, c) = W[r * w_rs + c * w_cs] (a tile stored either way).
template <class T>
void guarded_weighted_sum(int64_t ni, int64_t nj, int64_t Dv, const T* W, int64_t w_rs,
                          int64_t w_cs, const T* v, int64_t v_sn, T* O, int64_t ldo) {
  for (int64_t c = 0; c < ni; ++c)
    for (int64_t r = 0; r < nj; ++r) {
      const T w = W[r * w_rs + c * w_cs];
      if (w == T(0)) continue;
      for (int64_t e = 0; e < Dv; ++e) O[c * ldo + e] += w * v[r * v_sn + e];
    }
}

LONGATTN_ISA_END
}  // namespace longattn::kernels
