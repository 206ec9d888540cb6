// Internal to the binding: Luo et al.'s RPE path on already-mapped features, for operators that
// apply their own feature maps first (kernelized_attention's rel_bias). Differentiable.
#pragma once
#include <torch/types.h>

namespace longattn::ops {

// phi_q, phi_k [B, H, N, m], v [B, H, N, Dv], rel_bias [H, 2N-1], all checked by the caller
// (rel_bias is checked here for NaN / +inf). key_log_scale l and eps_log_scale mu [B, H, N]
// (optional, differentiable): z_i = sum_j e^{b[j-i] + l_j} phi_q_i.phi_k_j v_j /
// (sum_j e^{b[j-i] + l_j} phi_q_i.phi_k_j + eps e^{mu_i}). `reference`: the reference path
// (ops/reference/kernelized_rpe.cpp) on CPU too; other devices take it anyway.
at::Tensor kernelized_rpe_from_features(const at::Tensor& phi_q, const at::Tensor& phi_k,
                                        const at::Tensor& v, const at::Tensor& rel_bias,
                                        bool causal,
                                        const c10::optional<at::Tensor>& key_padding_mask,
                                        double eps,
                                        const c10::optional<at::Tensor>& key_log_scale,
                                        const c10::optional<at::Tensor>& eps_log_scale,
                                        bool reference);

}  // namespace longattn::ops
