// Tile helpers shared by the Shatter forward and backward (internal to kernels/shatter).
// A tile is `nq` queries starting at i0 by `nk` keys starting at j0, stored row-major
// with row stride nk.
#pragma once
#include "kernels/common/numeric.h"
#include "kernels/common/isa_namespace.h"
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "kernels/common/vec_exp.h"
#include "kernels/shatter/shatter.h"

namespace longattn::kernels {
LONGATTN_ISA_BEGIN
namespace shatter_detail {

// Query and key block sizes. 64 x 128 float tiles (32 KiB each, four live in the backward)
// stay in L2 while the GEMMs stream the 64-wide rows of q, k and v through them.
constexpr int64_t kBlockQ = 64;
constexpr int64_t kBlockK = 128;

// out[c][r] = x[r * sn + c] for r < n, c < d: a block of rows transposed into a GEMM's B
// operand (kernels/common/block_gemm.h reads B row-major), once per tile.
template <class T>
inline void pack_transposed(const T* x, int64_t sn, int64_t n, int64_t d, T* out) {
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = 0; c < d; ++c) out[c * n + r] = x[r * sn + c];
}

// vexp: the shared vectorisable exp (kernels/common/vec_exp.h).
template <class T>
inline T sigmoid(T x) {
  return T(1) / (T(1) + vexp(-x));
}

// Number of keys of row ii that may take part under the causal rule (all nk when not causal).
inline int64_t causal_limit(bool causal, int64_t i0, int64_t ii, int64_t j0, int64_t nk) {
  if (!causal) return nk;
  const int64_t lim = i0 + ii - j0 + 1;
  return lim < 0 ? 0 : (lim > nk ? nk : lim);
}

// Whether key j of batch b takes part (padding only).
inline bool key_ok(const uint8_t* mask_b, int64_t j) { return mask_b == nullptr || mask_b[j] != 0; }

}  // namespace shatter_detail
LONGATTN_ISA_END
}  // namespace longattn::kernels
