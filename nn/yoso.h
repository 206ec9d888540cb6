// The YOSO attention layer in C++ (the twin of python/longattn/nn/yoso.py; docs/yoso.md):
// normalize(YOSO(q, k, v)) row-wise, plus optionally a depthwise convolution of the masked values
// (the "YOSO-C" variant). Registered in the attention registry as "yoso", "yoso-c" and "yoso-e".
#pragma once
#include <torch/torch.h>

#include <string>

#include "nn/attention.h"

namespace longattn::nn {

struct YOSOAttentionOptions {
  YOSOAttentionOptions(int64_t num_heads, int64_t hash_bits) : num_heads_(num_heads), hash_bits_(hash_bits) {}
  TORCH_ARG(int64_t, num_heads);
  TORCH_ARG(int64_t, hash_bits);               // τ; the authors use round(log2 N)
  TORCH_ARG(int64_t, num_hashes) = 32;          // m
  TORCH_ARG(int64_t, conv_window) = 0;          // w > 0: add the depthwise (w, 1) convolution
  TORCH_ARG(std::string, hashing) = "hadamard";
  TORCH_ARG(std::string, backward) = "lsh";
  TORCH_ARG(bool, use_expectation) = false;     // YOSO-E (O(N²)) instead of hashing
  TORCH_ARG(uint64_t, seed) = 0;
};

// q, k, v [B, H, N, Dh], key_mask [B, N] bool (true = takes part) -> [B, H, N, Dh].
// Hashes: in training every call draws a fresh seed from torch's default generator (so a run
// seeded with torch::manual_seed, and a resumed run that restores that generator, see the same
// hashes); in eval every call uses options.seed(), so evaluation is deterministic.
class YOSOAttentionImpl : public AttentionCoreImpl {
 public:
  explicit YOSOAttentionImpl(YOSOAttentionOptions options);
  torch::Tensor forward(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                        const torch::Tensor& key_mask) override;
  int64_t seed_for_call();  // what the next forward uses (draws in training mode)
  YOSOAttentionOptions options;
  torch::nn::Conv2d conv{nullptr};
};
TORCH_MODULE(YOSOAttention);

}  // namespace longattn::nn
