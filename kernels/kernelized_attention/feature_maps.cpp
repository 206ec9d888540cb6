#include "kernels/kernelized_attention/feature_maps.h"

#include <cmath>
#include <cstring>
#include <initializer_list>

#include "kernels/common/blas.h"
#include "kernels/common/vec_exp.h"

namespace longattn::kernels {
LONGATTN_ISA_BEGIN

namespace {

// Row maximum and its first index.
template <class T>
inline T row_max(const T* u, int64_t n, int32_t* where) {
  T best = u[0];
  int32_t at = 0;
  for (int64_t i = 1; i < n; ++i)
    if (u[i] > best) {
      best = u[i];
      at = static_cast<int32_t>(i);
    }
  if (where) *where = at;
  return best;
}

}  // namespace

template <class T>
void feature_map_forward(const FeatureMapSpec<T>& s, const T* x, int64_t ldx, int64_t rows, T* phi,
                         int64_t ldphi, T* shift, int32_t* argmax) {
  const int64_t D = s.D, m = s.m;
  switch (s.kind) {
    case FeatureMap::elu:
      for (int64_t r = 0; r < rows; ++r) {
        const T* xr = x + r * ldx;
        T* pr = phi + r * ldphi;
#pragma omp simd
        for (int64_t d = 0; d < D; ++d) pr[d] = xr[d] > T(0) ? xr[d] + T(1) : vexp(xr[d]);
      }
      return;
    case FeatureMap::relu:
      for (int64_t r = 0; r < rows; ++r) {
        const T* xr = x + r * ldx;
        T* pr = phi + r * ldphi;
#pragma omp simd
        for (int64_t d = 0; d < D; ++d) pr[d] = xr[d] > T(0) ? xr[d] : T(0);
      }
      return;
    case FeatureMap::sikf:
      for (int64_t r = 0; r < rows; ++r) {
        const T* xr = x + r * ldx;
        T* pr = phi + r * ldphi;
        const T c = row_max(xr, D, argmax ? argmax + r : nullptr);
        if (shift) shift[r] = c;
#pragma omp simd
        for (int64_t d = 0; d < D; ++d) pr[d] = vexp(xr[d] - c);
      }
      return;
    case FeatureMap::favor: {
      // u = x omega^T, computed in place in phi, then the row terms.
      gemm(false, true, rows, m, D, T(1), x, ldx, s.omega, D, T(0), phi, ldphi);
      const T inv_sqrt_m = T(1) / std::sqrt(T(m));
      for (int64_t r = 0; r < rows; ++r) {
        const T* xr = x + r * ldx;
        T* pr = phi + r * ldphi;
        T half_sq = 0;
        for (int64_t d = 0; d < D; ++d) half_sq += xr[d] * xr[d];
        half_sq *= T(0.5);
        // c = max_r u_r with u = omega x - |x|^2/2; subtracting |x|^2/2 is a row constant,
        // so the max is taken before it and both are removed together.
        const T c0 = row_max(pr, m, argmax ? argmax + r : nullptr);
        if (shift) shift[r] = c0 - half_sq;
#pragma omp simd
        for (int64_t f = 0; f < m; ++f) pr[f] = vexp(pr[f] - c0) * inv_sqrt_m;
      }
      return;
    }
  }
}

template <class T>
void feature_map_backward(const FeatureMapSpec<T>& s, const T* x, int64_t ldx, int64_t rows,
                          const T* phi, int64_t ldphi, const int32_t* argmax, T* g_phi,
                          int64_t ld_gphi, const T* g_shift, T* gx, int64_t ldgx) {
  const int64_t D = s.D, m = s.m;
  switch (s.kind) {
    case FeatureMap::elu:
      for (int64_t r = 0; r < rows; ++r) {
        const T* xr = x + r * ldx;
        const T* pr = phi + r * ldphi;
        const T* gr = g_phi + r * ld_gphi;
        T* out = gx + r * ldgx;
        // d(elu+1)/dx = 1 for x > 0, e^x = phi otherwise.
#pragma omp simd
        for (int64_t d = 0; d < D; ++d) out[d] = xr[d] > T(0) ? gr[d] : gr[d] * pr[d];
      }
      return;
    case FeatureMap::relu:
      for (int64_t r = 0; r < rows; ++r) {
        const T* xr = x + r * ldx;
        const T* gr = g_phi + r * ld_gphi;
        T* out = gx + r * ldgx;
#pragma omp simd
        for (int64_t d = 0; d < D; ++d) out[d] = xr[d] > T(0) ? gr[d] : T(0);
      }
      return;
    case FeatureMap::sikf:
      for (int64_t r = 0; r < rows; ++r) {
        const T* pr = phi + r * ldphi;
        const T* gr = g_phi + r * ld_gphi;
        T* out = gx + r * ldgx;
#pragma omp simd
        for (int64_t d = 0; d < D; ++d) out[d] = gr[d] * pr[d];
        // c = x[argmax]: its gradient lands on that element.
        if (g_shift) out[argmax[r]] += g_shift[r];
      }
      return;
    case FeatureMap::favor: {
      // With h = g_phi * phi (+ g_shift at the argmax, since c = u[argmax]):
      //   dL/du = h,  du_r/dx = omega_r - x  =>  gx = h omega - x * sum(h).
      for (int64_t r = 0; r < rows; ++r) {
        const T* pr = phi + r * ldphi;
        T* gr = g_phi + r * ld_gphi;
#pragma omp simd
        for (int64_t f = 0; f < m; ++f) gr[f] *= pr[f];
        if (g_shift) gr[argmax[r]] += g_shift[r];
      }
      gemm(false, false, rows, D, m, T(1), g_phi, ld_gphi, s.omega, D, T(0), gx, ldgx);
      for (int64_t r = 0; r < rows; ++r) {
        const T* gr = g_phi + r * ld_gphi;
        T sum = 0;
        for (int64_t f = 0; f < m; ++f) sum += gr[f];
        const T* xr = x + r * ldx;
        T* out = gx + r * ldgx;
#pragma omp simd
        for (int64_t d = 0; d < D; ++d) out[d] -= xr[d] * sum;
      }
      return;
    }
  }
}

#define LONGATTN_INSTANTIATE(T)                                                                  \
  template void feature_map_forward<T>(const FeatureMapSpec<T>&, const T*, int64_t, int64_t, T*, \
                                       int64_t, T*, int32_t*);                                   \
  template void feature_map_backward<T>(const FeatureMapSpec<T>&, const T*, int64_t, int64_t,    \
                                        const T*, int64_t, const int32_t*, T*, int64_t, const T*, \
                                        T*, int64_t);
LONGATTN_INSTANTIATE(float)
LONGATTN_INSTANTIATE(double)
#undef LONGATTN_INSTANTIATE

LONGATTN_ISA_END
}  // namespace longattn::kernels
