// The reference path of toeplitz_matmul(_2d) (ops/common.h, takes_reference_path): the same
// signatures and outputs as the CPU kernels of `_toeplitz_matmul(_2d)_forward/_backward`, written
// with ATen operations (torch.fft), device-generic. The `path` code is accepted and ignored: it
// names one of the fused kernel's implementations, which all compute the same product.
#pragma once
#include <torch/types.h>

#include <tuple>

namespace longattn::ops::reference {

at::Tensor toeplitz_forward(const at::Tensor& coeffs, const at::Tensor& x, bool causal, int64_t path);
std::tuple<at::Tensor, at::Tensor> toeplitz_backward(const at::Tensor& grad_y, const at::Tensor& coeffs,
                                                     const at::Tensor& x, bool causal, int64_t path,
                                                     bool want_x, bool want_coeffs);

at::Tensor toeplitz2d_forward(const at::Tensor& row, const at::Tensor& col, const at::Tensor& x,
                              int64_t height, int64_t width, int64_t path);
std::tuple<at::Tensor, at::Tensor, at::Tensor> toeplitz2d_backward(const at::Tensor& grad_y,
                                                                   const at::Tensor& row,
                                                                   const at::Tensor& col,
                                                                   const at::Tensor& x, int64_t height,
                                                                   int64_t width, int64_t path);

}  // namespace longattn::ops::reference
