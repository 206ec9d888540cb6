// The reference path of dropout (ops/reference/dropout.h): the counter-based mask of
// kernels/dropout/dropout.h recomputed with int64 tensor operations, so any device draws the
// same bits as the CPU kernel for the same seed. Element i (row-major index of x) reads lane
// i % 4 (16 bits, little-endian order) of splitmix64_mix(seed + (i / 4 + 1) * golden) and is kept
// when that lane is >= t = round(p * 65536).
//
// torch has no uint64: int64 addition and multiplication wrap the same way modulo 2^64, XOR is
// the same, and only the right shift differs (arithmetic in int64): a logical z >> s is
// (z >> s) & (2^(64 - s) - 1).
//
// Peak memory (bytes; n = x.numel(), s = sizeof(dtype), E = kReferenceChunkElements = 2^24,
// c = min(n, E / 4) elements per chunk): the output n s (plus float32 copies of x and of the
// output for half precision) and per chunk about 6 int64 temporaries of c / 4 groups and 2 of c
// lanes, a bool mask and two products of c elements: <= n s + 36 c bytes (about 150 MiB at most,
// whatever n; measured 72 MiB of temporaries at n = 2^21).

#include "ops/reference/dropout.h"

#include <algorithm>
#include <cmath>

#include "ops/common.h"

namespace longattn::ops::reference {
namespace {

constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ull;

// z >> s as unsigned 64-bit on int64 values.
at::Tensor logical_shift_right(const at::Tensor& z, int s) {
  return at::bitwise_and(at::bitwise_right_shift(z, s), int64_t((uint64_t(1) << (64 - s)) - 1));
}

// splitmix64's output function (kernels/common/random.h) on int64 lanes.
at::Tensor splitmix64_mix(at::Tensor z) {
  z = at::bitwise_xor(z, logical_shift_right(z, 30)).mul_(int64_t(0xBF58476D1CE4E5B9ull));
  z = at::bitwise_xor(z, logical_shift_right(z, 27)).mul_(int64_t(0x94D049BB133111EBull));
  return at::bitwise_xor(z, logical_shift_right(z, 31));
}

// keep [n] bool for the elements [begin, begin + n), begin a multiple of 4.
at::Tensor keep_bits(uint64_t seed, int64_t threshold, int64_t begin, int64_t n, const at::Device& device) {
  const int64_t groups = (n + 3) / 4;
  auto opts = at::TensorOptions().dtype(at::kLong).device(device);
  at::Tensor g = at::arange(begin / 4 + 1, begin / 4 + 1 + groups, opts);
  at::Tensor h = splitmix64_mix(g.mul_(int64_t(kGolden)).add_(int64_t(seed)));
  at::Tensor shifts = at::arange(0, 64, 16, opts);  // lane l: bits [16 l, 16 l + 16)
  at::Tensor lanes = at::bitwise_and(at::bitwise_right_shift(h.unsqueeze(1), shifts), int64_t(0xFFFF));
  return lanes.reshape({groups * 4}).narrow(0, 0, n).ge(threshold);
}

}  // namespace

at::Tensor dropout_apply(const at::Tensor& x, double p, int64_t seed) {
  if (is_half(x)) return as_dtype_of(dropout_apply(to_float32(x), p, seed), x);
  const at::Tensor xc = x.contiguous();
  at::Tensor y = at::empty(x.sizes(), x.options());
  const int64_t n = y.numel();
  if (n == 0) return y;
  // kernels::dropout_threshold / dropout_scale, and the scale rounded to the dtype as the kernel
  // multiplies in it.
  const int64_t t = std::lround(p * 65536.0);
  const double scale = t >= 65536 ? 0.0 : 65536.0 / double(65536 - t);
  const at::Tensor s = at::scalar_tensor(scale, x.options());
  const at::Tensor zero = at::zeros({}, x.options());
  const at::Tensor xf = xc.view({n}), yf = y.view({n});
  const int64_t chunk = kReferenceChunkElements / 4;  // a multiple of 4
  for (int64_t b = 0; b < n; b += chunk) {
    const int64_t len = std::min(chunk, n - b);
    at::Tensor keep = keep_bits(uint64_t(seed), t, b, len, x.device());
    // A dropped element is 0 even where x is NaN or inf, as in the kernel.
    yf.narrow(0, b, len).copy_(at::where(keep, xf.narrow(0, b, len) * s, zero));
  }
  return y;
}

}  // namespace longattn::ops::reference
