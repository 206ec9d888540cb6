// Exact softmax attention, fused: online softmax over key blocks, O(N) extra memory,
// logsumexp kept for a backward that recomputes the probabilities.
#pragma once
#include "kernels/common/isa_namespace.h"
#include <cstdint>

#include "kernels/common/tensor_view.h"

namespace longattn::kernels {

template <class T>
struct SoftmaxAttentionParams {
  BHND<const T> q;  // [B, H, Nq, D]
  BHND<const T> k;  // [B, H, Nk, D]
  BHND<const T> v;  // [B, H, Nk, Dv]
  // [B, Nk], nonzero = the key takes part; nullptr = every key takes part.
  const uint8_t* key_padding_mask = nullptr;
  int64_t mask_stride_b = 0;
  // [H, 2N-1] with N = Nq = Nk: added to the logit of (i, j) at index j - i + N - 1.
  const T* rel_bias = nullptr;
  int64_t rel_bias_stride_h = 0;
  bool causal = false;  // key j takes part for query i only when j <= i (Nq == Nk)
  double scale = 1.0;   // logits are scale * q.k (+ bias)
  int threads = 0;      // <= 0: OpenMP default
};

// Writes every element of out [B, H, Nq, Dv] and lse [B, H, Nq] (contiguous). A query with
// no key taking part gets out = 0 and lse = -inf.
LONGATTN_ISA_BEGIN
template <class T>
void softmax_attention_forward(const SoftmaxAttentionParams<T>& p, BHND<T> out, T* lse);
LONGATTN_ISA_END

template <class T>
struct SoftmaxAttentionGrads {
  BHND<const T> out;       // forward output [B, H, Nq, Dv]
  BHND<const T> grad_out;  // [B, H, Nq, Dv]
  const T* lse = nullptr;  // [B, H, Nq] from the forward, contiguous
  BHND<T> grad_q;          // [B, H, Nq, D]   contiguous
  BHND<T> grad_k;          // [B, H, Nk, D]   contiguous
  BHND<T> grad_v;          // [B, H, Nk, Dv]  contiguous
  T* grad_rel_bias = nullptr;  // [H, 2N-1] contiguous, or nullptr when there is no bias
};

// Writes every element of every gradient output (rows with no key give zero gradients).
LONGATTN_ISA_BEGIN
template <class T>
void softmax_attention_backward(const SoftmaxAttentionParams<T>& p, const SoftmaxAttentionGrads<T>& g);
LONGATTN_ISA_END

}  // namespace longattn::kernels
