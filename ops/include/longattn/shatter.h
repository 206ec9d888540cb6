// Shatter attention: one head whose score matrix is shared by P value streams, each weighted
// by a soft partition of the relative position (docs/shatter.md). The same operator as
// torch.ops.longattn.shatter_attention.
#pragma once
#include <torch/types.h>

#include <string>

namespace longattn {

struct ShatterAttentionOptions {
  std::string activation = "softmax";          // "softmax" (over the keys) or "sigmoid" (elementwise)
  bool causal = false;                          // key j takes part for query i only when j <= i
  c10::optional<at::Tensor> key_padding_mask;   // [B, N] bool, true = the key takes part
  c10::optional<double> scale;                  // default 1/sqrt(D)
  // "fused": the fused CPU kernel; "reference": the ATen-only reference path (any device, never
  // an N x N tensor). Non-CPU tensors always take the reference path.
  std::string path = "fused";
};

// q, k [B, N, D], v [B, P, N, Dv], partition [P, 2N-1] (weight of part p at offset
// r = j - i, index r + N - 1) -> [B, N, Dv]:
//   out_i = sum_p sum_j a_ij partition[p, j - i + N - 1] v[p]_j.
// float32 or float64; differentiable in q, k, v and partition.
at::Tensor shatter_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                             const at::Tensor& partition, const ShatterAttentionOptions& options = {});

}  // namespace longattn
