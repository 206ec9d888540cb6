// Shatter attention (Tian, Maynez, Parikh 2021, reconstructed; see docs/shatter.md):
// one head of attention whose single score matrix is shared by P value streams, each
// weighted by a soft partition of the relative position r = j - i,
//
//   out_i = sum_p sum_j a_ij * partition[p, j - i + N - 1] * v[p]_j,
//
// with a_ij = softmax over the keys taking part of scale * q_i.k_j, or sigmoid of it
// elementwise (no normalisation; keys not taking part get a_ij = 0).
// Fused like flash attention: online softmax over key blocks, no N x N tensor, O(N)
// extra memory in the forward; the backward recomputes a_ij from the logsumexp.
#pragma once
#include "kernels/common/isa_namespace.h"
#include <cstdint>

#include "kernels/common/tensor_view.h"

namespace longattn::kernels {

enum class ShatterActivation { softmax, sigmoid };

template <class T>
struct ShatterParams {
  BHND<const T> q;  // [B, 1, N, D]  (one head; the H stride is unused)
  BHND<const T> k;  // [B, 1, N, D]
  BHND<const T> v;  // [B, P, N, Dv] (one value stream per part; H = P)
  // [P, 2N-1], last dimension contiguous: weight of part p at offset r = j - i, index r + N - 1.
  const T* partition = nullptr;
  int64_t partition_stride_p = 0;
  // [B, N], nonzero = the key takes part; nullptr = every key takes part.
  const uint8_t* key_padding_mask = nullptr;
  int64_t mask_stride_b = 0;
  ShatterActivation activation = ShatterActivation::softmax;
  bool causal = false;  // key j takes part for query i only when j <= i
  double scale = 1.0;   // scores are scale * q.k
  int threads = 0;      // <= 0: OpenMP default
};

// Writes every element of out [B, 1, N, Dv] and, for softmax, lse [B, N] (contiguous; a
// query with no key taking part gets out = 0 and lse = -inf). For sigmoid, lse may be
// nullptr; when given it is filled with zeros.
LONGATTN_ISA_BEGIN
template <class T>
void shatter_forward(const ShatterParams<T>& p, BHND<T> out, T* lse);
LONGATTN_ISA_END

template <class T>
struct ShatterGrads {
  BHND<const T> out;       // forward output [B, 1, N, Dv] (softmax only; unused for sigmoid)
  BHND<const T> grad_out;  // [B, 1, N, Dv]
  const T* lse = nullptr;  // [B, N] from the forward (softmax only)
  BHND<T> grad_q;          // [B, 1, N, D]
  BHND<T> grad_k;          // [B, 1, N, D]
  BHND<T> grad_v;          // [B, P, N, Dv]
  T* grad_partition = nullptr;  // [P, 2N-1] contiguous
};

// Writes every element of every gradient output. Deterministic: the same inputs give
// the same bits whatever the thread count (reductions have a fixed shape and order).
LONGATTN_ISA_BEGIN
template <class T>
void shatter_backward(const ShatterParams<T>& p, const ShatterGrads<T>& g);
LONGATTN_ISA_END

}  // namespace longattn::kernels
