// Toeplitz products along the sequence (relative positions by FFT): the FastRPB bias B v in
// 1-D and 2-D. The same operators as torch.ops.longattn.toeplitz_matmul(_2d).
#pragma once
#include <torch/types.h>

#include <string>

namespace longattn {

// coeffs [H, 2N-1] (offset r = j - i at index r + N - 1), x [B, H, N, C] -> y [B, H, N, C],
// y_i = sum_j coeffs[j - i + N - 1] x_j; causal: only j <= i. path: "auto", "fft" or "direct"
// (the fused CPU kernel's implementations: the same result; for tests and benchmarks), or
// "reference" (torch.fft in channel chunks, any device; tensors off the CPU take it whatever
// path says). Gradients for coeffs and x.
at::Tensor toeplitz_matmul(const at::Tensor& coeffs, const at::Tensor& x, bool causal = false,
                           const std::string& path = "auto");

// An image of height x width flattened row by row (N = height * width), bias
// B[(a,b),(a',b')] = row_coeffs[a' - a + height - 1] + col_coeffs[b' - b + width - 1]:
// row_coeffs [H, 2 height - 1], col_coeffs [H, 2 width - 1], x [B, H, N, C] -> B x.
// path: as toeplitz_matmul's.
at::Tensor toeplitz_matmul_2d(const at::Tensor& row_coeffs, const at::Tensor& col_coeffs,
                              const at::Tensor& x, int64_t height, int64_t width,
                              const std::string& path = "auto");

}  // namespace longattn
