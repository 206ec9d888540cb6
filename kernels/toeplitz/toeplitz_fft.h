// Building blocks of Toeplitz products by FFT, shared by the Toeplitz operator and by
// Luo et al.'s kernelized attention with RPE. Internal to the kernels.
//
// A product y_i = sum_j c[j - i + N - 1] x_j is the linear convolution y = k * x with the
// kernel k[t] = c[N - 1 - t], t = i - j in [-(N - 1), N - 1]. Zero padding to L >= 2N - 1 makes
// the circular convolution of length L equal to it on [0, N). Buffers use the fft layout
// [L][2][W]: channel c0 + l in the real part of lane l, channel c0 + W + l in the imaginary part.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>

#include "kernels/fft/fft.h"

namespace longattn::kernels::toeplitz_detail {

// Spectrum (permuted order, one lane: [L][2]) of the kernel for coefficients c [2N - 1],
// multiplied by `scale`. Causal drops the offsets r > 0 (t < 0).
template <class T>
void kernel_spectrum(const fft::Plan<T>& plan, const T* c, int64_t N, bool causal, T scale,
                     T* out) {
  const int64_t L = plan.n;
  std::fill(out, out + 2 * L, T(0));
  for (int64_t t = 0; t < N; ++t) out[2 * t] = c[N - 1 - t] * scale;
  if (!causal)
    for (int64_t t = 1; t < N; ++t) out[2 * (L - t)] = c[N - 1 + t] * scale;
  fft::forward<T, 1>(plan, out);
}

// Copies channels [c0, c0 + 2W) of rows [0, N) of x (row stride sn, C channels) into buf,
// zero elsewhere (missing channels and rows [N, L)).
template <class T, int W>
void load_chunk(const T* x, int64_t sn, int64_t N, int64_t C, int64_t c0, int64_t L, T* buf) {
  const int64_t nc = std::min<int64_t>(2 * W, C - c0);
  if (nc == 2 * W) {
    for (int64_t j = 0; j < N; ++j) std::memcpy(buf + j * 2 * W, x + j * sn + c0, 2 * W * sizeof(T));
  } else {
    for (int64_t j = 0; j < N; ++j) {
      T* dst = buf + j * 2 * W;
      const T* src = x + j * sn + c0;
      for (int l = 0; l < 2 * W; ++l) dst[l] = l < nc ? src[l] : T(0);
    }
  }
  std::memset(static_cast<void*>(buf + N * 2 * W), 0, (L - N) * 2 * W * sizeof(T));
}

// The inverse of load_chunk on rows [0, N): y[j, c0 + l] = buf[j][l] for the channels present.
template <class T, int W>
void store_chunk(const T* buf, int64_t N, int64_t C, int64_t c0, T* y, int64_t sn) {
  const int64_t nc = std::min<int64_t>(2 * W, C - c0);
  for (int64_t j = 0; j < N; ++j) std::memcpy(y + j * sn + c0, buf + j * 2 * W, nc * sizeof(T));
}

// buf[f] *= z[f] (conj(z[f]) when `conjugate`), z a one-lane spectrum [L][2].
template <class T, int W>
void multiply_spectrum(T* buf, const T* z, int64_t L, bool conjugate) {
  for (int64_t f = 0; f < L; ++f) {
    const T zr = z[2 * f], zi = conjugate ? -z[2 * f + 1] : z[2 * f + 1];
    T* re = buf + f * 2 * W;
    T* im = re + W;
#pragma omp simd
    for (int l = 0; l < W; ++l) {
      const T a = re[l], b = im[l];
      re[l] = a * zr - b * zi;
      im[l] = a * zi + b * zr;
    }
  }
}

// acc[f] += sum over lanes of g[f] * conj(x[f]), acc a one-lane spectrum [L][2]. Because two
// real channels share a lane, the real part of the resulting correlation is the sum of the two
// channels' correlations (the cross terms land in the imaginary part).
template <class T, int W>
void accumulate_cross(const T* g, const T* x, int64_t L, T* acc) {
  for (int64_t f = 0; f < L; ++f) {
    const T* gr = g + f * 2 * W;
    const T* xr = x + f * 2 * W;
    T sr = 0, si = 0;
#pragma omp simd reduction(+ : sr, si)
    for (int l = 0; l < W; ++l) {
      sr += gr[l] * xr[l] + gr[W + l] * xr[W + l];
      si += gr[W + l] * xr[l] - gr[l] * xr[W + l];
    }
    acc[2 * f] += sr;
    acc[2 * f + 1] += si;
  }
}

// From a summed cross spectrum (one lane, permuted, destroyed): grad_c[N - 1 - t] +=
// Re(IFFT)[t mod L] / L, the derivative with respect to the kernel value k[t].
template <class T>
void coeff_grad_from_cross(const fft::Plan<T>& plan, T* cross, int64_t N, bool causal,
                           T* grad_c) {
  const int64_t L = plan.n;
  fft::inverse<T, 1>(plan, cross);
  const T inv = T(1) / T(L);
  for (int64_t t = 0; t < N; ++t) grad_c[N - 1 - t] += cross[2 * t] * inv;
  if (!causal)
    for (int64_t t = 1; t < N; ++t) grad_c[N - 1 + t] += cross[2 * (L - t)] * inv;
}

}  // namespace longattn::kernels::toeplitz_detail
