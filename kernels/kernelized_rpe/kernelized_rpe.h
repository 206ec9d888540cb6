// Kernelized attention with a relative positional encoding (Luo et al., NeurIPS 2021), at the
// level of feature-mapped queries and keys:
//
//   z_i = sum_j w[j - i + N - 1] phi_q_i . phi_k_j v_j / sum_j w[j - i + N - 1] phi_q_i . phi_k_j
//
// with Toeplitz weights w = exp(b - max b) >= 0 per head (computed by the caller). Algorithm 1
// of the paper: Toeplitz products, by FFT, over the m (Dv + 1) channels phi_k_j[m'] * [v_j, 1][d];
// the numerator and denominator are then contracted with phi_q_i. Channels are processed in
// chunks of at most 2W (one feature slice [m0, m0 + 2W) for one value column d), so extra
// memory is O(L * 2W) per thread plus O(N (Dv + 1)), never O(N m Dv).
//
// Accuracy: the FFT's rounding error is absolute, ~eps log2(L) |w|_2 |phi_k column|_2 for the
// whole head, not relative to each row. A row whose weighted key mass is far below that (a
// causal row with few keys under a steep bias, in float) cannot be resolved; such rows, and
// rows with no key, give zero outputs instead of noise. Use double for extreme biases.
//
// A zero denominator gives a zero output and no gradient. Masked keys act as phi_k_j = 0 and get
// zero gradients for phi_k_j and v_j.
#pragma once
#include "kernels/common/isa_namespace.h"
#include <cstdint>

#include "kernels/common/tensor_view.h"

namespace longattn::kernels {

template <class T>
struct KernelizedRpeParams {
  BHND<const T> phi_q;  // [B, H, N, m], nonnegative features
  BHND<const T> phi_k;  // [B, H, N, m], nonnegative features
  BHND<const T> v;      // [B, H, N, Dv]
  const T* weights = nullptr;    // [H, 2N - 1], index j - i + N - 1, nonnegative
  int64_t weights_stride_h = 0;  // 0: one vector shared by all heads
  const uint8_t* key_padding_mask = nullptr;  // [B, N], nonzero = the key takes part
  int64_t mask_stride_b = 0;
  bool causal = false;  // only keys j <= i
  // Added to every nonempty row's denominator (as kernelized_attention's eps); 0 = the paper's
  // exact ratio. Rows with no weighted key still give zeros.
  double eps = 0.0;
  int threads = 0;
};

// Writes out [B, H, N, Dv] and den [B, H, N] (contiguous; the denominators plus eps, 0 for
// empty rows, for the backward).
LONGATTN_ISA_BEGIN
template <class T>
void kernelized_rpe_forward(const KernelizedRpeParams<T>& p, BHND<T> out, T* den);
LONGATTN_ISA_END

template <class T>
struct KernelizedRpeGrads {
  BHND<const T> out;        // forward output
  const T* den = nullptr;   // forward denominators [B, H, N]
  BHND<const T> grad_out;   // [B, H, N, Dv]
  BHND<T> grad_phi_q;       // [B, H, N, m]
  BHND<T> grad_phi_k;       // [B, H, N, m]
  BHND<T> grad_v;           // [B, H, N, Dv]
  T* grad_weights = nullptr;  // [H, 2N - 1] contiguous ([2N - 1] when shared), or nullptr
};

// Writes every element of every gradient output.
LONGATTN_ISA_BEGIN
template <class T>
void kernelized_rpe_backward(const KernelizedRpeParams<T>& p, const KernelizedRpeGrads<T>& g);
LONGATTN_ISA_END

}  // namespace longattn::kernels
