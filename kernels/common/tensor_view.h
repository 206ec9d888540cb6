// Strided views over raw memory, the common currency of the kernels.
#pragma once
#include <cstdint>

namespace longattn::kernels {

// A [B, H, N, D] tensor whose innermost dimension is contiguous; the other three
// strides (in elements) are free, so a [B, N, H, D] buffer viewed as [B, H, N, D]
// needs no copy.
template <class T>
struct BHND {
  T* data = nullptr;
  int64_t B = 0, H = 0, N = 0, D = 0;
  int64_t sb = 0, sh = 0, sn = 0;

  T* row(int64_t b, int64_t h, int64_t n) const { return data + b * sb + h * sh + n * sn; }

  // A densely packed [B, H, N, D] view of `p`.
  static BHND contiguous(T* p, int64_t B, int64_t H, int64_t N, int64_t D) {
    return BHND{p, B, H, N, D, H * N * D, N * D, D};
  }
};

}  // namespace longattn::kernels
