// Kernelized attention with a relative positional encoding (Luo et al., NeurIPS 2021), at the
// level of feature-mapped queries and keys, for ANY finite bias b:
//
//   z_i = sum_j e^{b[j-i] + l_j} a_i.K_j v_j / (sum_j e^{b[j-i] + l_j} a_i.K_j + eps e^{mu_i})
//
// a_i = phi_q_i, K_j = phi_k_j (nonnegative), b [H, 2N - 1] at index j - i + N - 1 (finite or
// -inf = the offset takes no part), l_j an optional log-scale of key j (the exponential feature
// maps pass their per-key stabilisers here, so keys of any range keep their precision) and mu_i
// an optional log-scale of eps per query row (both 0 when not given). Algorithm 1 of the paper:
// Toeplitz products, by FFT, over the m (Dv + 1) channels K_j[m'] * [v_j, 1][d], contracted with
// a_i; chunks of one value column d and at most 2W features, so extra memory is O(L * 2W) per
// thread plus O(N (Dv + 1)), never O(N m Dv).
//
// Precision for any bias (docs/toeplitz.md derives it). A single global scale e^{b - max b}
// makes rows far below that maximum drown in the FFT's absolute rounding. Instead, per head:
//  1. a linear trend s is taken out of the bias, e^{b[r]} = e^{b[r] - s r} e^{s j} e^{-s i}:
//     the factor e^{s j + l_j - c_k} goes into the keys, e^{-s i} is a per-row factor that cancels
//     between numerator and denominator (it only rescales eps e^{mu_i}). s minimises, over all
//     rows, how far a row's largest weight lies below the global scale of the product (a convex
//     function of s, found by ternary search); a linear ramp or a one-sided slope becomes flat.
//  2. the FFT runs on w'[r] = e^{b[r] - s r - c_w} <= 1 and keys scaled by e^{s j + l_j - c_k} <= 1.
//  3. every row is checked a posteriori: the FFT's absolute error is about
//     delta_i = eps_T sqrt(log2 L) |w'|_2 max_m' |K'[:, m']|_2 |a_i|_1; a row whose denominator is
//     not above delta_i / tau (tau = 1e-5 in float, 1e-11 in double) is recomputed directly,
//     in double, with its own shift max_j (b[j-i] + l_j): exact for any finite bias, at
//     O(N (m + Dv)) per such row. Outputs are thus within ~2 tau of the output's scale.
// The backward follows the same split: FFT rows through the Toeplitz products, direct rows
// directly, so gradients meet the same bound.
// float32 inputs are computed in double (copies of the inputs, results rounded once): in float
// the FFT's rounding, relative to a head's largest term, fails the check for nearly every row as
// soon as the keys' log-scales span ~10 (FAVOR+ at D = 64 does), and the direct sums would make
// the operator O(N^2).
//
// Rows with no key (all masked, or causal before the first key) give zero outputs and zero
// gradients; so does a zero denominator with eps = 0. Masked keys are never read: any value
// (NaN, inf) in their phi_k, v or log-scale reaches no output and no gradient.
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
  const T* rel_bias = nullptr;  // [H, 2N - 1], index j - i + N - 1; finite or -inf
  int64_t bias_stride_h = 0;    // 0: one vector shared by all heads
  const T* key_log_scale = nullptr;  // [B, H, N] contiguous l_j, or nullptr (0)
  const T* eps_log_scale = nullptr;  // [B, H, N] contiguous mu_i, or nullptr (0)
  const uint8_t* key_padding_mask = nullptr;  // [B, N], nonzero = the key takes part
  int64_t mask_stride_b = 0;
  bool causal = false;  // only keys j <= i
  double eps = 0.0;     // >= 0, added (times e^{mu_i}) to the true denominator
  int threads = 0;
};

// Saved by the forward for the backward, per row [B, H, N] (contiguous): the row's
// denominator plus eps in the row's own scale (0 for an empty row), and whether the row was
// computed directly (1) or through the FFT (0).
template <class T>
struct KernelizedRpeRows {
  T* den = nullptr;
  uint8_t* direct = nullptr;
};

// Writes out [B, H, N, Dv] and rows.
LONGATTN_ISA_BEGIN
template <class T>
void kernelized_rpe_forward(const KernelizedRpeParams<T>& p, BHND<T> out, KernelizedRpeRows<T> rows);
LONGATTN_ISA_END

template <class T>
struct KernelizedRpeGrads {
  BHND<const T> out;        // forward output
  const T* den = nullptr;   // from the forward
  const uint8_t* direct = nullptr;
  BHND<const T> grad_out;   // [B, H, N, Dv]
  BHND<T> grad_phi_q;       // [B, H, N, m]
  BHND<T> grad_phi_k;       // [B, H, N, m]
  BHND<T> grad_v;           // [B, H, N, Dv]
  T* grad_rel_bias = nullptr;      // [H, 2N - 1] contiguous ([2N - 1] when shared), or nullptr
  T* grad_key_log_scale = nullptr;  // [B, H, N], or nullptr
  T* grad_eps_log_scale = nullptr;  // [B, H, N], or nullptr
};

// Writes every element of every gradient output.
LONGATTN_ISA_BEGIN
template <class T>
void kernelized_rpe_backward(const KernelizedRpeParams<T>& p, const KernelizedRpeGrads<T>& g);
LONGATTN_ISA_END

}  // namespace longattn::kernels
