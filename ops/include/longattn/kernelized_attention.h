// Kernelized (linear) attention: out_i = phi(q_i)^T S_i / (phi(q_i)^T s_i + eps) with
// S_i = sum_j phi(k_j) v_j^T, s_i = sum_j phi(k_j) over the keys that take part; O(N) time and
// memory. The same operator as torch.ops.longattn.kernelized_attention.
#pragma once
#include <torch/types.h>

#include <string>

namespace longattn {

struct KernelizedAttentionOptions {
  bool causal = false;                         // key j takes part for query i only when j <= i
  c10::optional<at::Tensor> key_padding_mask;  // [B, Nk] bool, true = the key takes part
  // favor only: omega [m, D] shared by the heads or [H, m, D] (see random_features); a
  // constant (no gradient).
  c10::optional<at::Tensor> projection;
  // >= 0, added to the denominator of the stabilised features (kernels/kernelized_attention/
  // kernelized_attention.h: the largest product is about 1), with or without rel_bias; with 0,
  // a zero denominator gives a zero output.
  double eps = 1e-6;
  // [H, 2N-1] (Nq == Nk == N): Luo et al.'s relative positional encoding, key j weighted by
  // e^{rel_bias[j - i + N - 1]} for query i in both sums, exact for any finite bias; computed by
  // FFT Toeplitz products on the features (O(N log N m Dv), docs/toeplitz.md). Differentiable.
  c10::optional<at::Tensor> rel_bias;
  // "fused" (the CPU kernel; on other devices the reference path, the only one there) or
  // "reference": the device-generic ATen composite (ops/reference/), the same formula and
  // stabilisers, never an N x N tensor (O(N^2) time with rel_bias).
  std::string path = "fused";
};

// q [B, H, Nq, D], k [B, H, Nk, D], v [B, H, Nk, Dv] -> [B, H, Nq, Dv]; float32 or float64.
// feature_map: "elu" (elu + 1), "relu", "sikf" (exp with a cancelling shift), "favor"
// (Performer's positive random features exp(omega x - |x|^2/2) / sqrt(m); for an estimate of
// softmax(q k^T / sqrt(D)) pass q and k scaled by D^-1/4).
at::Tensor kernelized_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                const std::string& feature_map,
                                const KernelizedAttentionOptions& options = {});

struct RandomFeaturesOptions {
  bool orthogonal = true;          // Gaussian blocks orthogonalised by QR, as Performer
  std::string scaling = "chi";     // "chi" (rows with chi(d) norms) or "sqrt_d"
  c10::optional<int64_t> heads;    // [heads, m, d] with independent blocks per head
  c10::optional<at::ScalarType> dtype;  // float32 (default) or float64
  // Where the result lives; drawn on the CPU and moved, so every device gets the same bits.
  c10::optional<at::Device> device;
};

// Performer's projection omega [m, d] (or [heads, m, d]), reproducible from the seed.
at::Tensor random_features(int64_t m, int64_t d, int64_t seed,
                           const RandomFeaturesOptions& options = {});

}  // namespace longattn
