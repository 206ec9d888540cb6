// YOSO attention (Zeng et al., ICML 2021): Bernoulli sampling by locality-sensitive hashing.
//
// With q̂ = q/‖q‖ and k̂ = k/‖k‖ (L2, eps 1e-12 as torch's F.normalize), x_ij = q̂_iᵀk̂_j and
//   E_ij = (1 − arccos(x_ij)/π)^τ                                   (collision probability)
//   YOSO:   Y_i = (1/m) Σ_h Σ_j 1[f_h(q̂_i) = f_h(k̂_j)] v_j           (m hashes of τ sign bits)
//   YOSO-E: Y_i = Σ_j E_ij v_j                                       (its expectation)
// Keys whose mask is 0 never take part; queries whose mask is 0 output zeros and get no gradient.
//
// The LSH path is split in three calls so the binding can keep the hash codes between forward
// and backward (hashing is the most expensive part at D = 64):
//   yoso_hash      -> codes [B, H, m, N] int32 (−1 for masked rows)
//   yoso_forward   -> Y by hash-table cumulation, linear in N
//   yoso_backward_lsh / yoso_backward_exact -> the paper's surrogate gradient (not the true one)
//
// Randomness: every (b, h) draws its own hash functions from a stream derived from (seed, b, h)
// alone (as the authors, who draw per batch·head), so the same seed gives the same codes and
// outputs bit for bit whatever the thread count. A consequence: a sequence's output depends on
// its batch index b as well as on the seed.
#pragma once
#include "kernels/common/isa_namespace.h"
#include <algorithm>
#include <cstdint>

#include "kernels/common/random.h"
#include "kernels/common/tensor_view.h"

namespace longattn::kernels {

// The generator of one (b, h)'s hash functions: a function of (seed, b, h) only, so every thread
// count and the reference path (ops/reference/yoso.cpp) draw the same bits.
inline SplitMix64 yoso_stream(uint64_t seed, int64_t b, int64_t h) {
  uint64_t s = splitmix64_mix(seed + kGoldenGamma);
  s = splitmix64_mix(s ^ splitmix64_mix(uint64_t(b) * 2 + 1 + kGoldenGamma));
  s = splitmix64_mix(s ^ splitmix64_mix(uint64_t(h) * 2 + 2 + kGoldenGamma));
  return SplitMix64{s};
}

// The Hadamard hashing's geometry: rows padded to Dpad, the next power of two >= max(D, tau, 2);
// each pseudo-rotation gives floor(Dpad / tau) codes, so m codes take `rotations` of them.
struct YosoHadamardShape {
  int64_t dpad = 1, per_rotation, rotations;
  YosoHadamardShape(int64_t D, int64_t tau, int64_t m) {
    while (dpad < std::max<int64_t>(std::max<int64_t>(D, tau), 2)) dpad <<= 1;
    per_rotation = dpad / tau;
    rotations = (m + per_rotation - 1) / per_rotation;
  }
};

enum class YosoHashing : int {
  gaussian = 0,  // dense Gaussian projection [m·τ, D]: O(m·τ·D) per row
  hadamard = 1,  // H·D₃·H·D₂·H·D₁ pseudo-rotations: O(rotations·Dpad·log Dpad) per row
};

// Derivative used by the dense (YOSO-E / exact) backward for dE/dx.
enum class YosoDerivative : int {
  exact = 0,      // τ (1 − θ/π)^{τ−1} / (π √(1 − x²)), x clamped to |x| ≤ 1 − kYosoDerivativeClamp
  surrogate = 1,  // (τ/2) E(x): the paper's bounded stand-in
};

// Distance from ±1 at which the exact derivative clamps x: the derivative is unbounded at |x| = 1
// (where q̂ = ±k̂, e.g. a token attending to itself), so it is evaluated at |x| = 1 − 1e-6 there,
// which caps 1/√(1 − x²) at ≈ 707.
inline constexpr double kYosoDerivativeClamp = 1e-6;

// Limits of the kernels: codes are int32 with −1 reserved, so τ ≤ 30. Memory does not depend on τ
// (buckets are found by radix sort, never by a 2^τ table).
inline constexpr int kYosoMaxHashBits = 30;

template <class T>
struct YosoParams {
  BHND<const T> q;  // [B, H, Nq, D]
  BHND<const T> k;  // [B, H, Nk, D]
  BHND<const T> v;  // [B, H, Nk, Dv]
  // [B, Nk], nonzero = the key takes part; nullptr = every key takes part.
  const uint8_t* key_padding_mask = nullptr;
  int64_t key_mask_stride_b = 0;
  // [B, Nq], nonzero = the query takes part (zero: output row 0); nullptr = every query.
  // Self-attention passes the key mask here too.
  const uint8_t* query_padding_mask = nullptr;
  int64_t query_mask_stride_b = 0;
  int hash_bits = 8;    // τ in [1, kYosoMaxHashBits]
  int num_hashes = 32;  // m ≥ 1 (LSH only)
  uint64_t seed = 0;    // LSH only
  YosoHashing hashing = YosoHashing::gaussian;  // LSH only
  int threads = 0;      // <= 0: OpenMP default
};

template <class T>
struct YosoGrads {
  BHND<const T> grad_out;  // [B, H, Nq, Dv]
  BHND<T> grad_q;          // [B, H, Nq, D]   contiguous
  BHND<T> grad_k;          // [B, H, Nk, D]   contiguous
  BHND<T> grad_v;          // [B, H, Nk, Dv]  contiguous
};

// Hash codes of every query and key: q_codes [B, H, m, Nq], k_codes [B, H, m, Nk] (contiguous),
// code = Σ_t 1[r_tᵀx > 0]·2^t over the τ bits of each hash, −1 for masked rows.
LONGATTN_ISA_BEGIN
template <class T>
void yoso_hash(const YosoParams<T>& p, int32_t* q_codes, int32_t* k_codes);
LONGATTN_ISA_END

// Y [B, H, Nq, Dv] (every element written) from the codes of yoso_hash. Per (b, h) and hash:
// keys and queries are bucketed by a stable radix sort of their codes, each bucket's value sum
// is added to its queries. O(m·(N + Dv·N)) time per (b, h), O(N) scratch per thread.
LONGATTN_ISA_BEGIN
template <class T>
void yoso_forward(const YosoParams<T>& p, const int32_t* q_codes, const int32_t* k_codes,
                  BHND<T> out);
LONGATTN_ISA_END

// The paper's surrogate backward estimated with the same codes (B_ij = collision indicator):
//   ∂L/∂q̂_i = (τ/2m) Σ_h Σ_j B_ij (g_iᵀv_j) k̂_j,  ∂L/∂k̂_j = (τ/2m) Σ_h Σ_i B_ij (g_iᵀv_j) q̂_i,
//   ∂L/∂v_j = (1/m) Σ_h Σ_i B_ij g_i,  then through the L2 normalisation to q and k.
// Per bucket with a queries and b keys it takes the cheaper of the pairwise form,
// a·b·(Dv + 2D), and the factored form Σ_j k̂_j v_jᵀ (D×Dv), 2(a+b)·D·Dv, so the cost per hash
// is at most linear in N and close to (collisions)·(Dv + 2D) for well-spread codes.
LONGATTN_ISA_BEGIN
template <class T>
void yoso_backward_lsh(const YosoParams<T>& p, const int32_t* q_codes, const int32_t* k_codes,
                       const YosoGrads<T>& g);
LONGATTN_ISA_END

// The same surrogate computed exactly over all pairs with E_ij (= yoso_expectation_backward with
// YosoDerivative::surrogate): O(N²) time, O(N) memory.
LONGATTN_ISA_BEGIN
template <class T>
void yoso_backward_exact(const YosoParams<T>& p, const YosoGrads<T>& g);
LONGATTN_ISA_END

// YOSO-E forward: Y_i = Σ_j E_ij v_j, fused over blocks, O(N) extra memory.
LONGATTN_ISA_BEGIN
template <class T>
void yoso_expectation_forward(const YosoParams<T>& p, BHND<T> out);
LONGATTN_ISA_END

// YOSO-E backward with dE/dx = the exact derivative or the surrogate; through the normalisation.
LONGATTN_ISA_BEGIN
template <class T>
void yoso_expectation_backward(const YosoParams<T>& p, const YosoGrads<T>& g,
                               YosoDerivative derivative);
LONGATTN_ISA_END

}  // namespace longattn::kernels
