// Dropout with a counter-based mask: y = x * keep / (1 - p), where keep for element i is a pure
// function of (seed, i). Why not torch's dropout: on the CPU it draws one generator call per
// element through a locked generator (in training the encoder spent more time there than in
// linear attention itself), and it stores the mask for the backward. Here the mask costs a few
// integer operations per element, is recomputed in the backward (nothing stored), and does not
// depend on the thread count.
//
// The random stream: element i reads 16 bits of splitmix64(seed + (i / 4 + 1) * golden), lane i % 4.
// An element is dropped when those 16 bits are < t = round(p * 65536), so the drop probability
// is t / 65536 (p rounded to a multiple of 2^-16) and kept elements are scaled by
// 65536 / (65536 - t), which keeps E[y] = x exactly.
#pragma once
#include "kernels/common/isa_namespace.h"
#include <cstdint>

namespace longattn::kernels {

// The largest drop probability: above it p * 65536 would round to 65536 and drop everything
// (a keep probability of 0 has no scale), so callers reject such p.
constexpr double kDropoutMaxP = 1.0 - 1.0 / 65536.0;

struct DropoutParams {
  double p = 0.0;       // in [0, kDropoutMaxP]
  uint64_t seed = 0;
  int threads = 0;      // <= 0: OpenMP default
};

// The 16-bit threshold and the scale of kept elements for drop probability p.
LONGATTN_ISA_BEGIN
uint32_t dropout_threshold(double p);
double dropout_scale(double p);
LONGATTN_ISA_END

// out[i] = x[i] * scale if element i is kept, else 0; n elements, contiguous. out may be x.
// The same call on a gradient is the backward (the mask is the same).
LONGATTN_ISA_BEGIN
template <class T>
void dropout_apply(const DropoutParams& p, const T* x, T* out, int64_t n);
LONGATTN_ISA_END

// keep[i] = 1 if element i is kept: the mask dropout_apply uses (for tests and inspection).
LONGATTN_ISA_BEGIN
void dropout_mask(const DropoutParams& p, uint8_t* keep, int64_t n);
LONGATTN_ISA_END

}  // namespace longattn::kernels
