// Helpers shared by the YOSO kernels (not part of the public interface).
#pragma once
#include "kernels/common/scratch.h"
#include "kernels/common/parallel.h"
#include "kernels/common/isa_namespace.h"
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <omp.h>
#ifdef __linux__
#include <sys/mman.h>
#endif

#include "kernels/common/tensor_view.h"
#include "kernels/yoso/yoso.h"

namespace longattn::kernels {
LONGATTN_ISA_BEGIN
namespace yoso_detail {

// torch's F.normalize eps: q̂ = q / max(‖q‖, eps).
inline constexpr double kNormEps = 1e-12;

// Threads worth using for `items` work items totalling about `flops`: one below ~1 MFLOP, where
// waking a team costs more than it saves (and far more on a loaded machine), and never more
// than there are items. Results do not depend on it (see the determinism tests).
inline int threads_for(int threads, int64_t items, double flops) {
  if (flops < 1e6) return 1;
  const int64_t t = std::min<int64_t>(resolve_threads(threads), items);
  return int(std::max<int64_t>(t, 1));
}

inline bool takes_part(const uint8_t* mask, int64_t stride_b, int64_t b, int64_t n) {
  return mask == nullptr || mask[b * stride_b + n] != 0;
}

// inv[n] = 1 / max(‖x_n‖, eps) for the N rows of x at (b, h).
template <class T>
void inverse_norms(const BHND<const T>& x, int64_t b, int64_t h, T* inv) {
  for (int64_t n = 0; n < x.N; ++n) {
    const T* r = x.row(b, h, n);
    double s = 0;
    for (int64_t d = 0; d < x.D; ++d) s += double(r[d]) * double(r[d]);
    inv[n] = T(1.0 / std::max(std::sqrt(s), kNormEps));
  }
}

// In place: grad (∂L/∂x̂ on entry, ∂L/∂x on exit) through x̂ = x / max(‖x‖, eps):
// ∂L/∂x = (ĝ − x̂ (x̂ᵀĝ)) / ‖x‖ when ‖x‖ > eps, ĝ / eps otherwise (the norm is then a constant).
template <class T>
void normalize_backward_row(const T* x, T inv_norm, int64_t D, T* grad) {
  const bool clamped = double(inv_norm) >= 1.0 / kNormEps;
  if (clamped) {
    for (int64_t d = 0; d < D; ++d) grad[d] *= inv_norm;
    return;
  }
  T dot = 0;
  for (int64_t d = 0; d < D; ++d) dot += x[d] * grad[d];
  const T c = dot * inv_norm * inv_norm;  // x̂ᵀĝ / ‖x‖ with x̂ = x·inv
  for (int64_t d = 0; d < D; ++d) grad[d] = (grad[d] - c * x[d]) * inv_norm;
}

// arccos for float, vectorisable (no libm call): Abramowitz & Stegun 4.4.46, acos(x) = √(1−x)·P(x)
// on [0, 1] with |error| ≤ 2e-8 (below float's resolution), and acos(−x) = π − acos(x).
inline float fast_acos(float x) {
  const float a = std::fabs(x);
  float p = -0.0012624911f;
  p = p * a + 0.0066700901f;
  p = p * a - 0.0170881256f;
  p = p * a + 0.0308918810f;
  p = p * a - 0.0501743046f;
  p = p * a + 0.0889789874f;
  p = p * a - 0.2145988016f;
  p = p * a + 1.5707963050f;
  const float r = std::sqrt(std::max(0.0f, 1.0f - a)) * p;
  return x < 0 ? 3.14159265358979f - r : r;
}
inline double fast_acos(double x) { return std::acos(x); }

// Scratch budgets of the LSH kernels for one group of hashes processed together: bucket rows
// listed and pair weights stored. Defaults bound scratch to ~32 MiB + 4 Mi·sizeof(T) per thread
// whatever m and the spread of the codes; tests lower them to exercise the grouping. Not meant
// to be changed while kernels run.
struct GroupBudget {
  int64_t rows = int64_t(8) << 20;
  int64_t pairs = int64_t(4) << 20;
};
inline GroupBudget& group_budget() {
  static GroupBudget b;
  return b;
}

// The stable radix sort that buckets rows by hash code: writes to `order` the indices n with
// codes[n] >= 0, sorted by code, ties in index order, and to `sorted` their codes in that order;
// returns how many. Codes travel with the indices, so every pass reads sequentially. Digits of
// ≤ 16 bits, so ceil(τ/16) passes; scratch: tmp_order, tmp_codes [n], counts [65537].
int64_t sort_by_code(const int32_t* codes, int64_t n, int tau, int32_t* order, int32_t* sorted,
                     int32_t* tmp_order, int32_t* tmp_codes, int32_t* counts);

}  // namespace yoso_detail
LONGATTN_ISA_END
}  // namespace longattn::kernels
