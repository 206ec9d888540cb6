// The transformer encoder and the task heads (LRA style).
//
// Encoder: token embedding, learned absolute positions (or none, when the attention carries
// relative positions), pre-LayerNorm blocks x += drop(attn(LN(x))), x += drop(FFN(LN(x))) with a
// GELU feed-forward block, a final LayerNorm. Classifier: CLS (position 0) or masked-mean pooling,
// then an MLP. Retrieval: one shared encoder over both documents, the MLP reads [u, v, u*v, u-v].
#pragma once

#include <torch/torch.h>

#include <string>

#include "nn/attention.h"
#include "nn/dropout.h"

namespace longattn::nn {

struct ModelConfig {
  int64_t vocab_size = 0;
  int64_t num_classes = 2;
  int64_t max_len = 512;   // longest sequence, CLS included
  int64_t layers = 2;
  int64_t dim = 64;
  int64_t heads = 2;
  int64_t ffn = 128;
  double dropout = 0.1;
  std::string attention = "softmax";
  std::string positions = "learned";  // "learned" or "none"
  std::string pooling = "mean";       // "mean" or "cls"
  std::string fastrpb = "none";       // "none", "1d", "2d"
  int64_t height = 0, width = 0;      // image grid, for fastrpb=2d
  bool paired = false;                // retrieval: two documents per example
  uint64_t seed = 0;
  // Standard deviation of the token embedding's normal initialisation: 1 is torch's Embedding
  // default (what every earlier run used); PyTorch-LRA's models start from 0.02, as their
  // positions do, so the blocks' outputs and not the raw token vectors dominate the residual
  // stream from the first step.
  double embed_std = 1.0;

  // "key=value ..." form, stored in checkpoints so a model can be rebuilt from one.
  std::string to_string() const;
  static ModelConfig from_string(const std::string& s);  // throws std::invalid_argument on unknown keys
};

class EncoderImpl : public torch::nn::Module {
 public:
  explicit EncoderImpl(const ModelConfig& c);
  // tokens [B, N] int64, mask [B, N] bool -> [B, N, dim]
  torch::Tensor forward(const torch::Tensor& tokens, const torch::Tensor& mask);

 private:
  ModelConfig c_;
  torch::nn::Embedding embed_{nullptr};
  torch::Tensor positions_;
  torch::nn::ModuleList attn_norms_, attns_, ffn_norms_, ffns_;
  torch::nn::LayerNorm final_norm_{nullptr};
  Dropout drop_{nullptr};
};
TORCH_MODULE(Encoder);

class ClassifierImpl : public torch::nn::Module {
 public:
  explicit ClassifierImpl(const ModelConfig& c);
  // Logits [B, classes]. tokens2/mask2 are the second documents of retrieval pairs (undefined otherwise).
  torch::Tensor forward(const torch::Tensor& tokens, const torch::Tensor& mask, const torch::Tensor& tokens2 = {},
                        const torch::Tensor& mask2 = {});
  const ModelConfig& config() const { return c_; }

 private:
  torch::Tensor pool(const torch::Tensor& h, const torch::Tensor& mask);
  ModelConfig c_;
  Encoder encoder_{nullptr};
  torch::nn::Sequential head_{nullptr};
};
TORCH_MODULE(Classifier);

int64_t count_parameters(torch::nn::Module& m);

}  // namespace longattn::nn
