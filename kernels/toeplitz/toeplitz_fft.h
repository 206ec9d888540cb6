// Building blocks of Toeplitz products by FFT, shared by the Toeplitz operator and by
// Luo et al.'s kernelized attention with RPE. Internal to the kernels.
//
// A product y_i = sum_j c[j - i + N - 1] x_j is the linear convolution y = k * x with the
// kernel k[t] = c[N - 1 - t], t = i - j in [-(N - 1), N - 1]. Zero padding to L >= 2N - 1 makes
// the circular convolution of length L equal to it on [0, N). Buffers use the fft layout
// [L][2][W]: channel c0 + l in the real part of lane l, channel c0 + W + l in the imaginary part.
#pragma once
#include "kernels/common/isa_namespace.h"
#include <algorithm>
#include <cstdint>
#include <cstring>

#include "kernels/fft/fft.h"

namespace longattn::kernels {
LONGATTN_ISA_BEGIN
namespace toeplitz_detail {

// Spectra (permuted order, one lane each: [count][L][2]) of the kernels of `count` coefficient
// vectors c + h * stride (each [2N - 1]), multiplied by `scale`. Causal drops the offsets r > 0
// (t < 0). W kernels share one vector transform (one per lane, real part), so this costs one
// transform per W heads rather than a scalar transform per head.
template <class T>
void kernel_spectra(const fft::Plan<T>& plan, const T* c, int64_t stride, int64_t count, int64_t N,
                    bool causal, T scale, T* out) {
  constexpr int W = fft::kLanes<T>;
  const int64_t L = plan.n;
  AlignedBuffer<T> buf(L * 2 * W);
  for (int64_t h0 = 0; h0 < count; h0 += W) {
    const int nl = static_cast<int>(std::min<int64_t>(W, count - h0));
    T* b = buf.data();
    std::fill(b, b + L * 2 * W, T(0));
    for (int l = 0; l < nl; ++l) {
      const T* ch = c + (h0 + l) * stride;
      for (int64_t t = 0; t < N; ++t) b[t * 2 * W + l] = ch[N - 1 - t] * scale;
      if (!causal)
        for (int64_t t = 1; t < N; ++t) b[(L - t) * 2 * W + l] = ch[N - 1 + t] * scale;
    }
    fft::forward<T, W>(plan, b);
    for (int l = 0; l < nl; ++l) {
      T* o = out + (h0 + l) * 2 * L;
      for (int64_t f = 0; f < L; ++f) {
        o[2 * f] = b[f * 2 * W + l];
        o[2 * f + 1] = b[f * 2 * W + W + l];
      }
    }
  }
}

// Copies channels [c0, c0 + 2W) of rows [0, N) of x (row stride sn, C channels) into buf,
// zero for missing channels. Rows [N, L) are left to fft::forward_padded.
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
  (void)L;
}

// The inverse of load_chunk on rows [0, N): y[j, c0 + l] = buf[j][l] for the channels present.
template <class T, int W>
void store_chunk(const T* buf, int64_t N, int64_t C, int64_t c0, T* y, int64_t sn) {
  const int64_t nc = std::min<int64_t>(2 * W, C - c0);
  for (int64_t j = 0; j < N; ++j) std::memcpy(y + j * sn + c0, buf + j * 2 * W, nc * sizeof(T));
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

// From `count` summed cross spectra ([count][L][2], permuted): grad_c[h][N - 1 - t] =
// Re(IFFT(cross_h))[t mod L] / L, the derivative with respect to the kernel value k[t];
// grad_c is [count][2N - 1], overwritten (causal: offsets r > 0 get 0). W spectra share one
// vector transform.
template <class T>
void coeff_grads_from_cross(const fft::Plan<T>& plan, const T* cross, int64_t count, int64_t N,
                            bool causal, T* grad_c) {
  constexpr int W = fft::kLanes<T>;
  const int64_t L = plan.n, R = 2 * N - 1;
  const T inv = T(1) / T(L);
  AlignedBuffer<T> buf(L * 2 * W);
  for (int64_t h0 = 0; h0 < count; h0 += W) {
    const int nl = static_cast<int>(std::min<int64_t>(W, count - h0));
    T* b = buf.data();
    std::fill(b, b + L * 2 * W, T(0));
    for (int l = 0; l < nl; ++l) {
      const T* x = cross + (h0 + l) * 2 * L;
      for (int64_t f = 0; f < L; ++f) {
        b[f * 2 * W + l] = x[2 * f];
        b[f * 2 * W + W + l] = x[2 * f + 1];
      }
    }
    fft::inverse<T, W>(plan, b);
    for (int l = 0; l < nl; ++l) {
      T* g = grad_c + (h0 + l) * R;
      std::fill(g, g + R, T(0));
      for (int64_t t = 0; t < N; ++t) g[N - 1 - t] = b[t * 2 * W + l] * inv;
      if (!causal)
        for (int64_t t = 1; t < N; ++t) g[N - 1 + t] = b[(L - t) * 2 * W + l] * inv;
    }
  }
}

}  // namespace toeplitz_detail
LONGATTN_ISA_END
}  // namespace longattn::kernels
