// The reference path of kernelized attention and of its feature maps (issue #17): the fused CPU
// kernels' formulas (kernels/kernelized_attention/*.h) written with ATen operations, device-generic,
// with the same signatures and outputs as the internal operators' CPU kernels
// (ops/kernelized_attention.cpp), so either can serve `_kernelized_attention_forward` & co.
#pragma once
#include <torch/types.h>

#include <tuple>

namespace longattn::ops::reference {

using OptTensor = c10::optional<at::Tensor>;

// (out [B, H, Nq, Dv], inv_denom [B, H, Nq]) as the CPU kernel: inv_denom = 1 / (d_i + eps) of the
// stabilised denominators (0 where that is not finite).
std::tuple<at::Tensor, at::Tensor> kernelized_attention_forward(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const OptTensor& mask,
    const OptTensor& projection, int64_t feature_map, bool causal, double eps);

// (grad_q, grad_k, grad_v): the exact derivative of the forward's definition, the eps-sized paths
// through the stabilising maxima included (as the kernel's).
std::tuple<at::Tensor, at::Tensor, at::Tensor> kernelized_attention_backward(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const at::Tensor& out, const at::Tensor& inv_denom, const OptTensor& mask,
    const OptTensor& projection, int64_t feature_map, bool causal, double eps);

// (phi [B, H, N, m], shift [B, H, N], argmax int32 [B, H, N]) as `_feature_map_forward`.
std::tuple<at::Tensor, at::Tensor, at::Tensor> feature_map_forward(const at::Tensor& x,
                                                                   c10::string_view feature_map,
                                                                   const OptTensor& projection,
                                                                   const OptTensor& mask);

// grad_x as `_feature_map_backward` (grad_shift: the total derivative with respect to the shift).
at::Tensor feature_map_backward(const at::Tensor& grad_phi, const at::Tensor& grad_shift,
                                const at::Tensor& x, const at::Tensor& phi, const at::Tensor& argmax,
                                c10::string_view feature_map, const OptTensor& projection,
                                const OptTensor& mask);

// sum over s of M[..., r, s] X[..., s, :] restricted to s <= r (lower) or s >= r (upper), for
// square M [..., n, n] and X [..., n, d]. The other triangle of M is ignored, and so are the rows
// of X it would multiply: a NaN or inf there reaches no output (a plain matmul would give
// 0 * NaN = NaN). Blocks of `block` rows: the part wholly on the allowed side is a matmul, the
// diagonal block a masked elementwise product of block * block * d elements per batch entry.
at::Tensor triangular_matmul(const at::Tensor& M, const at::Tensor& X, bool upper, int64_t block);

// The block for triangular_matmul that keeps its [batch, block, block, d] product within the
// reference budget (ops::kReferenceChunkElements).
int64_t triangular_block(int64_t batch, int64_t d, int64_t n);

// The sizes as integers (see concrete).
std::vector<int64_t> concrete_sizes(const at::Tensor& t);

// A tensor dimension as an integer (specialising a symbolic size: the loops over chunks need it).
int64_t concrete(const at::Tensor& t, int64_t dim);

}  // namespace longattn::ops::reference
