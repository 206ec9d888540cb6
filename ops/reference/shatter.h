// The reference path of shatter_attention (ops/reference/shatter.cpp): the same formula,
// signatures and saved statistics as the fused CPU kernels of `_shatter_attention_forward` /
// `_shatter_attention_backward` (kernels/shatter/shatter.h), written with ATen operations so
// that it runs on any device, never holding an N x N tensor.
#pragma once
#include <torch/types.h>

#include <tuple>

#include "ops/common.h"

namespace longattn::ops::reference {

// (out [B, N, Dv], lse [B, N]); activation 0 = softmax (lse: natural log of the row's
// denominator, max included; -inf and out 0 for a row with no key), 1 = sigmoid (lse = 0).
std::tuple<at::Tensor, at::Tensor> shatter_attention_forward(const at::Tensor& q, const at::Tensor& k,
                                                             const at::Tensor& v, const at::Tensor& partition,
                                                             const OptTensor& mask, int64_t activation,
                                                             bool causal, double scale);

// (grad_q, grad_k, grad_v, grad_partition).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> shatter_attention_backward(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const at::Tensor& partition, const at::Tensor& out, const at::Tensor& lse, const OptTensor& mask,
    int64_t activation, bool causal, double scale);

}  // namespace longattn::ops::reference
