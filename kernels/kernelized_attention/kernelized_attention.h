// Kernelized (linear) attention: out_i = phi(q_i)^T S_i / (phi(q_i)^T s_i + eps),
//   S_i = sum_j phi(k_j) v_j^T,  s_i = sum_j phi(k_j)
// over the keys j that take part for query i (unmasked; with `causal`, j <= i).
//
// Stabilisers (sikf, favor). The exponential maps are evaluated as phi(q_i) e^{-c_i} and
// phi(k_j) e^{-R_i}: c_i = the query row's own maximum exponent, R_i = the maximum exponent
// over every feature of every key that takes part for query i (one constant per (b, h)
// when not causal; the running maximum over keys j <= i when causal, so that no future key
// can reach output i, not even through rounding or eps). Both constants multiply the
// numerator and the denominator of row i alike, so the output does not depend on them
// except through eps, where they fix the scale eps is compared with: eps is added to the
// denominator of the stabilised features, whose largest product is about 1. As a result the
// output is exactly invariant to adding a constant to a query row or to all keys (sikf).
// The backward is the exact derivative of this definition, including the (eps-sized) path
// through the maxima, so it agrees with finite differences for any eps.
//
// Denominators: all features are non-negative, so d_i >= 0. With eps = 0 a zero
// denominator (no key takes part, relu features that never overlap, or exponentials that
// underflow when keys differ by more than ~87 in float) gives a zero output and zero
// gradient, never NaN; so does a denominator below T's normal range (its reciprocal overflows).
//
// Cost per (b, h): O(N m Dv) time and O(m Dv) state. Non-causal: one pass over the keys
// (S, s by GEMM), one over the queries. Causal: chunks of `chunk` tokens; inside a chunk the
// masked C x C products are dense GEMMs, a running m x (Dv+1) state carries the earlier
// chunks. The causal backward is one forward scan (gradient of q, recomputing the states)
// and one reverse scan (gradients of k and v, with a reverse m x (Dv+1) state); it stores
// only O(N) scalars per (b, h) (the running maxima, the denominators, the routing of the
// stabiliser gradient), never a per-token or per-chunk m x Dv state.
#pragma once
#include "kernels/common/isa_namespace.h"
#include <cstdint>

#include "kernels/common/tensor_view.h"
#include "kernels/kernelized_attention/feature_maps.h"

namespace longattn::kernels {

template <class T>
struct KernelizedAttentionParams {
  BHND<const T> q;  // [B, H, Nq, D]
  BHND<const T> k;  // [B, H, Nk, D]
  BHND<const T> v;  // [B, H, Nk, Dv]
  // [B, Nk], nonzero = the key takes part; nullptr = every key takes part.
  const uint8_t* key_padding_mask = nullptr;
  int64_t mask_stride_b = 0;
  FeatureMap feature_map = FeatureMap::elu;
  // favor only: omega [m, D] shared by the heads (projection_stride_h = 0) or [H, m, D]
  // (projection_stride_h = m * D); rows contiguous.
  const T* projection = nullptr;
  int64_t num_features = 0;  // m for favor (ignored otherwise: m = D)
  int64_t projection_stride_h = 0;
  bool causal = false;  // key j takes part for query i only when j <= i (Nq == Nk)
  double eps = 1e-6;    // >= 0
  int threads = 0;      // <= 0: OpenMP default
  int64_t chunk = 0;    // causal block length; <= 0: the default (tests use small ones)
  // Luo et al.'s relative bias takes a different (FFT) path: kernels/kernelized_rpe, on the
  // features of feature_map_forward (the ops layer's feature_map), with the same eps.
};

// Feature dimension m for these parameters.
template <class T>
inline int64_t kernelized_feature_dim(const KernelizedAttentionParams<T>& p) {
  return p.feature_map == FeatureMap::favor ? p.num_features : p.q.D;
}

// Writes every element of out [B, H, Nq, Dv] (any row strides, last dim contiguous), and,
// when inv_denom is not null, inv_denom [B, H, Nq] (contiguous) = 1 / (d_i + eps) of the
// stabilised denominators (0 where that is not finite): saved for the backward, which then
// skips recomputing them (3 of the causal backward's 14 GEMMs per chunk).
LONGATTN_ISA_BEGIN
template <class T>
void kernelized_attention_forward(const KernelizedAttentionParams<T>& p, BHND<T> out,
                                  T* inv_denom = nullptr);
LONGATTN_ISA_END

template <class T>
struct KernelizedAttentionGrads {
  BHND<const T> out;       // forward output [B, H, Nq, Dv]
  BHND<const T> grad_out;  // [B, H, Nq, Dv]
  BHND<T> grad_q;          // [B, H, Nq, D]
  BHND<T> grad_k;          // [B, H, Nk, D]
  BHND<T> grad_v;          // [B, H, Nk, Dv]
  const T* inv_denom = nullptr;  // [B, H, Nq] from the forward, or nullptr (recomputed)
};

// Writes every element of every gradient (masked keys and rows with no key get zeros).
// The projection is a constant (no gradient).
LONGATTN_ISA_BEGIN
template <class T>
void kernelized_attention_backward(const KernelizedAttentionParams<T>& p,
                                   const KernelizedAttentionGrads<T>& g);
LONGATTN_ISA_END

}  // namespace longattn::kernels
