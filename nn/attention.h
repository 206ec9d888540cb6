// Attention mechanisms by name, and the multi-head attention layer that uses them.
//
// A mechanism ("core") maps q, k, v [B, H, N, Dh] and a key mask [B, N] (bool, true = the key
// takes part) to [B, H, N, Dh]. Each one is a single entry in the registry (attention.cpp,
// builtin_attentions()): its name, a one-line description and a factory. An unknown name is an
// error that lists the known ones.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "nn/fast_rpb.h"

namespace longattn::nn {

struct AttentionSpec {
  std::string name = "softmax";
  int64_t dim = 64;      // model width; heads * head_dim
  int64_t heads = 2;
  int64_t max_len = 512;  // longest sequence the position-dependent parameters cover
  std::string fastrpb = "none";  // FastRPB add-on: "none", "1d", or "2d" (needs height and width)
  int64_t height = 0, width = 0;  // 2-D grid of the last height*width positions
  uint64_t seed = 0;              // for random features / hashes of approximate mechanisms
};

// The fixed settings of the approximate mechanisms (docs/train.md says why).
constexpr int64_t kFavorFeatures = 64;  // favor, kernelized-rpe: random features per head
// yoso, yoso-e: tau = round(log2 max_len) clamped to [4, 12], as the authors' LRA configs
// (10 for 1K-token images, 11 for 2K ListOps); more buckets than tokens only costs time.
int64_t yoso_hash_bits(int64_t max_len);
constexpr int64_t kShatterParts = 4;    // shatter: P value streams

class AttentionCoreImpl : public torch::nn::Module {
 public:
  virtual torch::Tensor forward(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                const torch::Tensor& key_mask) = 0;
};

using AttentionFactory = std::function<std::shared_ptr<AttentionCoreImpl>(const AttentionSpec&)>;

struct AttentionEntry {
  std::string name;
  std::string description;
  AttentionFactory make;
};

// The registered mechanisms, in registration order.
const std::vector<AttentionEntry>& attention_registry();
std::string attention_names();  // "softmax, softmax-rpe, ..."
// Throws std::invalid_argument for an unknown name, listing the known ones.
std::shared_ptr<AttentionCoreImpl> make_attention_core(const AttentionSpec& spec);

// FastRPB (the B v add-on): nn/fast_rpb.h.

// Multi-head attention: fused q/k/v projection, the named core, the optional FastRPB, output projection.
class MultiHeadAttentionImpl : public torch::nn::Module {
 public:
  explicit MultiHeadAttentionImpl(const AttentionSpec& spec);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& key_mask);  // x [B, N, dim]

 private:
  AttentionSpec spec_;
  torch::nn::Linear qkv_{nullptr}, out_{nullptr};
  std::shared_ptr<AttentionCoreImpl> core_;
  FastRPB rpb_{nullptr};
};
TORCH_MODULE(MultiHeadAttention);

}  // namespace longattn::nn
