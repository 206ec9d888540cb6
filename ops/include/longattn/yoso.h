// YOSO attention (Zeng et al., ICML 2021): Bernoulli sampling by LSH, linear in N, and its
// expectation YOSO-E. The same operators as torch.ops.longattn.yoso_attention / yoso_expectation.
//
// q and k are L2-normalised inside; the output is NOT normalised (the paper's layer normalises
// it afterwards: longattn.nn.YOSOAttention). key_padding_mask [B, Nk] bool, true = the key takes
// part; with Nq == Nk (self-attention) it masks the queries too (their output rows are zero).
//
// The backward of yoso_attention is the paper's SURROGATE, not the true gradient (which is zero
// almost everywhere for a hash-based estimator): dE/dx is replaced by (τ/2)·E(x) with
// E(x) = (1 − arccos(x)/π)^τ, estimated with the same hashes ("lsh", linear cost) or computed
// exactly over all pairs ("exact", O(N²) time, O(N) memory).
#pragma once
#include <torch/types.h>

#include <string>

namespace longattn {

struct YosoOptions {
  int64_t hash_bits = 0;   // τ in [1, 30] (required; the authors use round(log2 N))
  int64_t num_hashes = 0;  // m ≥ 1 (required; the authors use 16 or 32)
  int64_t seed = 0;        // the same seed gives the same hashes and output, any thread count
  c10::optional<at::Tensor> key_padding_mask;
  std::string hashing = "gaussian";  // "gaussian" | "hadamard" (the authors' fast hash)
  std::string backward = "lsh";      // "lsh" | "exact" (both the surrogate)
  // "fused" (the CPU kernels) | "reference" (ATen operations, any device: the same hash codes
  // for the same seed); tensors off the CPU take the reference whatever this says.
  std::string path = "fused";
};

// q [B, H, Nq, D], k [B, H, Nk, D], v [B, H, Nk, Dv] -> [B, H, Nq, Dv]; float32 or float64.
at::Tensor yoso_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                          const YosoOptions& options);

struct YosoExpectationOptions {
  int64_t hash_bits = 0;  // τ in [1, 30] (required)
  c10::optional<at::Tensor> key_padding_mask;
  std::string backward = "exact";  // "exact" (true derivative) | "surrogate" ((τ/2)·E)
  std::string path = "fused";      // "fused" | "reference", as YosoOptions::path
};

// Y_i = Σ_j (1 − arccos(q̂_iᵀk̂_j)/π)^τ v_j, fused: O(N²) time, O(N) extra memory.
at::Tensor yoso_expectation(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            const YosoExpectationOptions& options);

}  // namespace longattn
