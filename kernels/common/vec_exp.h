// exp for float and double that GCC vectorises (std::exp stays a scalar libm call unless
// -ffast-math): Cody-Waite reduction x = n ln2 + r, |r| <= ln2/2, (n by rounding to nearest), a Taylor polynomial for
// e^r (degree 7 for float: truncation (ln2/2)^8 / 8! = 5e-9 < 2^-24; degree 13 for double:
// 4e-18 < 2^-53), then the exponent bits of 2^n. Results below the smallest normal number
// are 0 (exp(-inf) = 0); above the largest finite result they are capped there (the
// kernels only evaluate exp of arguments <= 0, except elu's discarded branch).
#pragma once
#include "kernels/common/isa_namespace.h"
#include <cstdint>

namespace longattn::kernels {
LONGATTN_ISA_BEGIN

inline float vexp(float x) {
  const float lo = -87.3f, hi = 88.3f;
  const bool under = x < lo;
  // n from a copy where NaN becomes lo: converting NaN to an integer (and shifting the result)
  // would be undefined behaviour; x itself keeps the NaN, which reaches the result through r.
  const float xn = x > lo ? (x < hi ? x : hi) : lo;
  x = x < lo ? lo : (x > hi ? hi : x);
  // Round to nearest by the 1.5 * 2^23 trick (floor does not vectorise without
  // -fno-trapping-math); |x log2 e| < 2^22 here.
  const float n = (xn * 1.44269504088896341f + 12582912.f) - 12582912.f;
  const float r = (x - n * 0.693359375f) - n * -2.12194440e-4f;
  float p = 1.f / 5040;
  p = p * r + 1.f / 720;
  p = p * r + 1.f / 120;
  p = p * r + 1.f / 24;
  p = p * r + 1.f / 6;
  p = p * r + 0.5f;
  p = p * r + 1.f;
  p = p * r + 1.f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  return under ? 0.f : p * __builtin_bit_cast(float, bits);
}

inline double vexp(double x) {
  const double lo = -708.0, hi = 709.0;
  const bool under = x < lo;
  const double xn = x > lo ? (x < hi ? x : hi) : lo;  // NaN -> lo, as for float
  x = x < lo ? lo : (x > hi ? hi : x);
  const double n = (xn * 1.4426950408889634074 + 6755399441055744.0) - 6755399441055744.0;
  const double r = (x - n * 6.93145751953125e-1) - n * 1.42860682030941723212e-6;
  double p = 1.0 / 6227020800.0;  // 1/13!
  const double inv_fact[] = {1.0 / 479001600.0, 1.0 / 39916800.0, 1.0 / 3628800.0,
                             1.0 / 362880.0,    1.0 / 40320.0,    1.0 / 5040.0,
                             1.0 / 720.0,       1.0 / 120.0,      1.0 / 24.0,
                             1.0 / 6.0,         0.5,              1.0,
                             1.0};
  for (double c : inv_fact) p = p * r + c;
  const int64_t bits = (static_cast<int64_t>(n) + 1023) << 52;
  return under ? 0.0 : p * __builtin_bit_cast(double, bits);
}

LONGATTN_ISA_END
}  // namespace longattn::kernels
