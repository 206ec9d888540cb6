// Luo et al.'s kernelized attention with a relative positional encoding, at the feature level
// (phi(q), phi(k) already mapped, nonnegative): z_i = sum_j e^{b[j-i+N-1]} phi_q_i.phi_k_j v_j /
// (sum_j e^{b[j-i+N-1]} phi_q_i.phi_k_j + eps), exact for any finite bias (-inf: the offset takes
// no part; NaN, +inf: an error), by chunked FFT Toeplitz products on the detrended bias plus a
// direct computation of the rows the FFT cannot resolve (docs/toeplitz.md); O(N log N m Dv) time,
// O(N (m + Dv)) memory. The same operator as torch.ops.longattn.kernelized_rpe_attention.
#pragma once
#include <torch/types.h>

#include <string>

namespace longattn {

struct KernelizedRpeOptions {
  bool causal = false;                         // key j takes part for query i only when j <= i
  c10::optional<at::Tensor> key_padding_mask;  // [B, N] bool, true = the key takes part
  double eps = 0.0;  // >= 0, added to the denominator as it stands (the bias is not shifted)
  // "fused" (the CPU kernel; on other devices the reference path, the only one there) or
  // "reference": the device-generic ATen composite (ops/reference/), every row computed directly
  // in query chunks (exact for any finite bias, O(N^2 (m + Dv)) time, no N x N tensor).
  std::string path = "fused";
};

// phi_q, phi_k [B, H, N, m], v [B, H, N, Dv], rel_bias [H, 2N-1] -> [B, H, N, Dv]. Rows with no
// weighted key give zeros. Differentiable in all four tensors.
at::Tensor kernelized_rpe_attention(const at::Tensor& phi_q, const at::Tensor& phi_k,
                                    const at::Tensor& v, const at::Tensor& rel_bias,
                                    const KernelizedRpeOptions& options = {});

}  // namespace longattn
