// Exact softmax attention, fused (O(N) extra memory), with causal and padding masks and a
// learned relative bias. The same operator as torch.ops.longattn.softmax_attention.
#pragma once
#include <torch/types.h>

#include <string>

namespace longattn {

struct SoftmaxAttentionOptions {
  bool causal = false;                          // key j takes part for query i only when j <= i
  c10::optional<at::Tensor> key_padding_mask;   // [B, Nk] bool, true = the key takes part
  c10::optional<at::Tensor> rel_bias;           // [H, 2N-1], added to logit (i, j) at j - i + N - 1
  c10::optional<double> scale;                  // default 1/sqrt(D)
  // "fused": the fused CPU kernel; "reference": the ATen-only reference path (any device, never
  // an N x N tensor). Non-CPU tensors always take the reference path.
  std::string path = "fused";
};

// q [B, H, Nq, D], k [B, H, Nk, D], v [B, H, Nk, Dv] -> [B, H, Nq, Dv]; float32 or float64.
at::Tensor softmax_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                             const SoftmaxAttentionOptions& options = {});

}  // namespace longattn
