// Tile helpers shared by the Shatter forward and backward (internal to kernels/shatter).
// A tile is `nq` queries starting at i0 by `nk` keys starting at j0, stored row-major
// with row stride nk.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "kernels/shatter/shatter.h"

namespace longattn::kernels::shatter_detail {

// Query and key block sizes. 64 x 128 float tiles (32 KiB each, four live in the backward)
// stay in L2 while the GEMMs stream the 64-wide rows of q, k and v through them.
constexpr int64_t kBlockQ = 64;
constexpr int64_t kBlockK = 128;

// exp that the compiler vectorises (std::exp does not without -ffast-math): Cody-Waite
// reduction to r in [-ln2/2, ln2/2] and a degree-7 Taylor polynomial (truncation error
// < 5e-9 relative, below float rounding). Inputs below -87 give exactly 0, so -inf works.
inline float vexp(float x) {
  const float xc = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  const float n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round to nearest
  const float r = (xc - n * 0.693359375f) + n * 2.12194440e-4f;           // xc - n ln2
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float two_n;
  std::memcpy(&two_n, &bits, sizeof two_n);
  return x < -87.0f ? 0.0f : p * two_n;
}
// Double is what gradient checks use; accuracy over speed.
inline double vexp(double x) { return std::exp(x); }

template <class T>
inline T sigmoid(T x) {
  return T(1) / (T(1) + vexp(-x));
}

template <class T>
constexpr T neg_inf() {
  return -std::numeric_limits<T>::infinity();
}

// Number of keys of row ii that may take part under the causal rule (all nk when not causal).
inline int64_t causal_limit(bool causal, int64_t i0, int64_t ii, int64_t j0, int64_t nk) {
  if (!causal) return nk;
  const int64_t lim = i0 + ii - j0 + 1;
  return lim < 0 ? 0 : (lim > nk ? nk : lim);
}

// Whether key j of batch b takes part (padding only).
inline bool key_ok(const uint8_t* mask_b, int64_t j) { return mask_b == nullptr || mask_b[j] != 0; }

}  // namespace longattn::kernels::shatter_detail
