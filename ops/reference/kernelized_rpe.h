// The reference path of Luo et al.'s kernelized attention with a relative bias, at the feature
// level (issue #17): the formula of kernels/kernelized_rpe/kernelized_rpe.h with ATen operations,
// device-generic, with the same signatures and outputs as the internal operators' CPU kernels
// (ops/kernelized_rpe.cpp).
#pragma once
#include <torch/types.h>

#include <tuple>

namespace longattn::ops::reference {

// (out [B, H, N, Dv], den [B, H, N], direct uint8 [B, H, N]): den is the row's denominator plus
// eps in the row's own scale e^{M_i} (M_i = max_j b[j-i] + l_j over its keys), as the kernel saves
// for a directly computed row; every row that has a key is computed directly here (direct = 1),
// a row without one gives zeros (den = 0, direct = 0).
std::tuple<at::Tensor, at::Tensor, at::Tensor> kernelized_rpe_forward(
    const at::Tensor& phi_q, const at::Tensor& phi_k, const at::Tensor& v, const at::Tensor& rel_bias,
    const c10::optional<at::Tensor>& key_log_scale, const c10::optional<at::Tensor>& eps_log_scale,
    const c10::optional<at::Tensor>& key_padding_mask, bool causal, double eps);

// (grad phi_q, grad phi_k, grad v, grad rel_bias, grad key_log_scale, grad eps_log_scale).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> kernelized_rpe_backward(
    const at::Tensor& grad_out, const at::Tensor& phi_q, const at::Tensor& phi_k, const at::Tensor& v,
    const at::Tensor& rel_bias, const c10::optional<at::Tensor>& key_log_scale,
    const c10::optional<at::Tensor>& eps_log_scale, const at::Tensor& out, const at::Tensor& den,
    const at::Tensor& direct, const c10::optional<at::Tensor>& key_padding_mask, bool causal, double eps);

}  // namespace longattn::ops::reference
