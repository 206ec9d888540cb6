// The Shatter layer in C++ (the twin of python/longattn/nn/shatter.py; docs/shatter.md):
// one head of attention, P value matrices, a soft partition of the relative positions.
#pragma once
#include <torch/torch.h>

#include <string>

namespace longattn::nn {

// A soft partition of the offsets r = -(n-1) .. n-1 into P parts, pi_p(r) >= 0, sum_p = 1.
// "softmax" (learnable): softmax over p of a polynomial (degree `degree`) in the signed
// log-distance u(r) = sign(r) log(1 + |r|), initialised as P soft bins ordered along u over
// [-log(1 + init_range), log(1 + init_range)]. "bernstein" (fixed): the Bernstein basis of
// degree P - 1 in t = (1 + u / log(1 + max_distance)) / 2, clamped to [0, 1].
struct ShatterPartitionOptions {
  explicit ShatterPartitionOptions(int64_t num_parts) : num_parts_(num_parts) {}
  TORCH_ARG(int64_t, num_parts);
  TORCH_ARG(std::string, kind) = "softmax";
  TORCH_ARG(int64_t, degree) = 2;
  TORCH_ARG(double, init_range) = 64.0;
  TORCH_ARG(int64_t, max_distance) = 512;
};

class ShatterPartitionImpl : public torch::nn::Module {
 public:
  explicit ShatterPartitionImpl(ShatterPartitionOptions options);
  void reset_parameters();
  at::Tensor forward(int64_t n);  // [P, 2n - 1], index r + n - 1
  ShatterPartitionOptions options;
  at::Tensor weight;  // [P, degree + 1] for "softmax"; undefined for "bernstein"
};
TORCH_MODULE(ShatterPartition);

struct ShatterOptions {
  explicit ShatterOptions(int64_t embed_dim) : embed_dim_(embed_dim) {}
  TORCH_ARG(int64_t, embed_dim);
  TORCH_ARG(int64_t, num_parts) = 4;
  TORCH_ARG(int64_t, qk_dim) = 64;            // the single head's width; embed_dim without key projection
  TORCH_ARG(int64_t, value_dim) = 0;          // per part; 0: embed_dim / num_parts
  TORCH_ARG(bool, key_projection) = true;     // false: keys are the inputs themselves
  TORCH_ARG(std::string, activation) = "softmax";  // or "sigmoid"
  TORCH_ARG(bool, causal) = false;
  TORCH_ARG(std::string, partition) = "softmax";   // or "bernstein"
  TORCH_ARG(int64_t, partition_degree) = 2;
  TORCH_ARG(double, partition_init_range) = 64.0;
  TORCH_ARG(int64_t, partition_max_distance) = 512;
  TORCH_ARG(bool, bias) = true;
};

// x [B, N, embed_dim] -> [B, N, embed_dim]:
//   y = W_o sum_p sum_j a_ij pi_p(j - i) (x_j W_v,p),  a from q = x W_q, k = x W_k (or x).
class ShatterImpl : public torch::nn::Module {
 public:
  explicit ShatterImpl(ShatterOptions options);
  at::Tensor forward(const at::Tensor& x, const c10::optional<at::Tensor>& key_padding_mask = c10::nullopt);
  ShatterOptions options;
  torch::nn::Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, out_proj{nullptr};
  ShatterPartition partition{nullptr};
};
TORCH_MODULE(Shatter);

}  // namespace longattn::nn
