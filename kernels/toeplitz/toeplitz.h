// Toeplitz matrix products along the sequence: the relative-position bias of FastRPB and the
// core of Luo et al.'s kernelized attention with RPE.
//
//   y_i = sum_j c[j - i + N - 1] x_j        (offset r = j - i, key minus query)
//
// per (batch, head) and channel, for x [B, H, N, C] and per-head coefficients c [H, 2N - 1];
// with `causal`, only j <= i. Two paths give the same result:
//   * FFT: a linear convolution by zero padding to a power of two L >= 2N - 1, O(N log N) per
//     channel, two real channels per complex lane, W lanes per vector, channels in chunks of
//     2W so that extra memory is O(L * 2W) per thread, never O(N * C);
//   * direct: blocks of the explicit Toeplitz matrix times x through GEMM, O(N^2 C), faster for
//     short sequences.
// The backward gives grad_x (the transposed product) and grad_c, a correlation summed over
// batch and channels, reduced in a fixed order (deterministic whatever the thread count).
#pragma once
#include "kernels/common/isa_namespace.h"
#include <cstdint>

#include "kernels/common/tensor_view.h"

namespace longattn::kernels {

enum class ToeplitzPath { Auto, Direct, Fft };

template <class T>
struct ToeplitzParams {
  BHND<const T> x;              // [B, H, N, C]
  const T* coeffs = nullptr;    // [H, 2N - 1], index r + N - 1
  int64_t coeffs_stride_h = 0;  // elements between heads (0 = one vector shared by all heads)
  bool causal = false;          // only keys j <= i (offsets r <= 0)
  ToeplitzPath path = ToeplitzPath::Auto;  // Auto chooses by a cost model; tests force a path
  int threads = 0;                         // <= 0: OpenMP default
};

// Writes every element of y [B, H, N, C] (any row strides, last dimension contiguous).
LONGATTN_ISA_BEGIN
template <class T>
void toeplitz_forward(const ToeplitzParams<T>& p, BHND<T> y);
LONGATTN_ISA_END

template <class T>
struct ToeplitzGrads {
  BHND<const T> grad_y;        // [B, H, N, C]
  BHND<T> grad_x;              // [B, H, N, C]; data == nullptr: not wanted
  T* grad_coeffs = nullptr;    // [H, 2N - 1] contiguous (or [2N - 1] when coeffs_stride_h
                               // is 0); nullptr: not wanted. Causal: offsets r > 0 get 0.
};

LONGATTN_ISA_BEGIN
template <class T>
void toeplitz_backward(const ToeplitzParams<T>& p, const ToeplitzGrads<T>& g);
LONGATTN_ISA_END

// The path Auto picks for these sizes (exposed for tests and benchmarks).
LONGATTN_ISA_BEGIN
ToeplitzPath toeplitz_choose_path(int64_t N, int64_t C, bool causal);
LONGATTN_ISA_END

// 2-D: an image of height x width flattened row by row (N = height * width) with the separable
// additive bias B[(a,b),(a',b')] = row[a' - a + height - 1] + col[b' - b + width - 1]:
//   (B x)[a,b] = sum_a' row[a' - a] rowsum_a'(x) + sum_b' col[b' - b] colsum_b'(x),
// 1-D products on the row sums [height, C] and column sums [width, C], broadcast back.
template <class T>
struct Toeplitz2dParams {
  BHND<const T> x;                // [B, H, height * width, C]
  const T* row_coeffs = nullptr;  // [H, 2 height - 1]
  const T* col_coeffs = nullptr;  // [H, 2 width - 1]
  int64_t row_stride_h = 0, col_stride_h = 0;
  int64_t height = 0, width = 0;
  ToeplitzPath path = ToeplitzPath::Auto;
  int threads = 0;
};

LONGATTN_ISA_BEGIN
template <class T>
void toeplitz2d_forward(const Toeplitz2dParams<T>& p, BHND<T> y);
LONGATTN_ISA_END

template <class T>
struct Toeplitz2dGrads {
  BHND<const T> grad_y;
  BHND<T> grad_x;                 // data == nullptr: not wanted
  T* grad_row_coeffs = nullptr;   // [H, 2 height - 1] contiguous, or nullptr
  T* grad_col_coeffs = nullptr;   // [H, 2 width - 1] contiguous, or nullptr
};

LONGATTN_ISA_BEGIN
template <class T>
void toeplitz2d_backward(const Toeplitz2dParams<T>& p, const Toeplitz2dGrads<T>& g);
LONGATTN_ISA_END

}  // namespace longattn::kernels
