// Internal to kernels/kernelized_attention: one (batch, head) slice of the problem and the
// small helpers shared by the causal and non-causal paths.
#pragma once
#include "kernels/common/numeric.h"
#include "kernels/common/isa_namespace.h"
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "kernels/kernelized_attention/kernelized_attention.h"

namespace longattn::kernels {
LONGATTN_ISA_BEGIN
namespace kernelized_detail {

// Rows of one (b, h): pointers to row 0 and row strides.
template <class T>
struct Head {
  const T *q, *k, *v;
  int64_t sq, sk, sv;
  const uint8_t* mask;  // [Nk] or nullptr
  int64_t Nq, Nk, D, Dv, m;
  FeatureMapSpec<T> fm;
  bool exp_map;
  T eps;

  // Scale factor e^(a - b) for a stabilised quantity with exponent a seen from reference
  // b >= a; 0 when a = -inf (nothing there: a masked key, an empty state). For elu/relu
  // every exponent is 0 or -inf, so no exp is needed.
  T fac(T a, T b) const {
    if (a == neg_inf<T>()) return T(0);
    return exp_map ? std::exp(a - b) : T(1);
  }

  // Features of keys [j0, j0 + n) into phi [n, m] (row-own shift), exponents c (-inf for a
  // masked key, 0 for an unmasked key of elu/relu), argmax for the exponential maps, and
  // vaug [n, Dv + 1] = [v_j, 1].
  void keys(int64_t j0, int64_t n, T* phi, T* c, int32_t* arg, T* vaug) const {
    feature_map_forward(fm, k + j0 * sk, sk, n, phi, m, c, arg);
    for (int64_t j = 0; j < n; ++j) {
      if (!exp_map) c[j] = 0;
      if (mask && !mask[j0 + j]) {
        c[j] = neg_inf<T>();
        std::memset(phi + j * m, 0, sizeof(T) * m);
      }
      if (vaug) {
        // A masked key's v is never read: a zero feature row times NaN would still be NaN.
        if (mask && !mask[j0 + j]) std::memset(vaug + j * (Dv + 1), 0, sizeof(T) * Dv);
        else std::memcpy(vaug + j * (Dv + 1), v + (j0 + j) * sv, sizeof(T) * Dv);
        vaug[j * (Dv + 1) + Dv] = T(1);
      }
    }
  }

  // Masked keys get zero gradients whatever their k holds (feature_map_backward reads x, and
  // favor's x * sum(h) is NaN for a NaN row even when h = 0).
  void zero_masked_key_grads(int64_t j0, int64_t n, T* gk, int64_t sgk) const {
    if (!mask) return;
    for (int64_t j = 0; j < n; ++j)
      if (!mask[j0 + j]) std::memset(gk + j * sgk, 0, sizeof(T) * D);
  }

  void queries(int64_t i0, int64_t n, T* phi, T* c, int32_t* arg) const {
    feature_map_forward(fm, q + i0 * sq, sq, n, phi, m, c, arg);
  }

  // 1 / (d + eps), or 0 when that is not positive (eps = 0 and no weight) or not finite (a
  // denominator below the normal range, whose reciprocal overflows: counted as an underflow).
  T inverse_denominator(T d) const {
    const T den = d + eps;
    const T inv = den > T(0) ? T(1) / den : T(0);
    return inv <= std::numeric_limits<T>::max() ? inv : T(0);
  }
};

template <class T>
Head<T> head_of(const KernelizedAttentionParams<T>& p, int64_t b, int64_t h) {
  Head<T> s;
  s.q = p.q.row(b, h, 0);
  s.k = p.k.row(b, h, 0);
  s.v = p.v.row(b, h, 0);
  s.sq = p.q.sn;
  s.sk = p.k.sn;
  s.sv = p.v.sn;
  s.mask = p.key_padding_mask ? p.key_padding_mask + b * p.mask_stride_b : nullptr;
  s.Nq = p.q.N;
  s.Nk = p.k.N;
  s.D = p.q.D;
  s.Dv = p.v.D;
  s.m = kernelized_feature_dim(p);
  s.fm.kind = p.feature_map;
  s.fm.D = s.D;
  s.fm.m = s.m;
  s.fm.omega = p.projection ? p.projection + h * p.projection_stride_h : nullptr;
  s.exp_map = feature_map_is_exponential(p.feature_map);
  s.eps = static_cast<T>(p.eps);
  return s;
}

// Gradient rows of one (b, h).
template <class T>
struct HeadGrads {
  const T *out, *gout;
  int64_t sout, sgout;
  T *gq, *gk, *gv;
  int64_t sgq, sgk, sgv;
};

template <class T>
HeadGrads<T> head_grads_of(const KernelizedAttentionGrads<T>& g, int64_t b, int64_t h) {
  return {g.out.row(b, h, 0),    g.grad_out.row(b, h, 0), g.out.sn,         g.grad_out.sn,
          g.grad_q.row(b, h, 0), g.grad_k.row(b, h, 0),   g.grad_v.row(b, h, 0), g.grad_q.sn,
          g.grad_k.sn,           g.grad_v.sn};
}

// For query rows i0..i0+n with inverse denominators inv: the gradient with respect to the
// augmented numerator [n_i, d_i]:  gn_i = [gz_i inv_i, -(gz_i . z_i) inv_i]  (z = n / (d + eps)),
// and delta_i = -(gz_i . z_i) eps inv_i, the gradient with respect to the row's stabiliser
// (scaling a row's weights by lambda changes z_i by z_i eps / (d_i + eps) per unit log lambda).
template <class T>
void numerator_grads(const Head<T>& s, const HeadGrads<T>& g, int64_t i0, int64_t n, const T* inv,
                     T* gn, T* delta) {
  const int64_t Dv = s.Dv;
  for (int64_t i = 0; i < n; ++i) {
    const T* z = g.out + (i0 + i) * g.sout;
    const T* gz = g.gout + (i0 + i) * g.sgout;
    T* row = gn + i * (Dv + 1);
    T dot = 0;
    for (int64_t c = 0; c < Dv; ++c) {
      dot += gz[c] * z[c];
      row[c] = gz[c] * inv[i];
    }
    row[Dv] = -dot * inv[i];
    if (delta) delta[i] = -dot * s.eps * inv[i];
  }
}

// out_i = numer_i[0:Dv] / (numer_i[Dv] + eps); exact zeros are written as +0 so that the
// output bits do not depend on the sign of a product with a zero weight.
// inv_out (nullable) receives the inverse denominators for the backward.
template <class T>
void write_output(const Head<T>& s, const T* numer, int64_t n, T* out, int64_t sout, T* inv_out) {
  const int64_t Dv = s.Dv;
  for (int64_t i = 0; i < n; ++i) {
    const T* row = numer + i * (Dv + 1);
    const T inv = s.inverse_denominator(row[Dv]);
    if (inv_out) inv_out[i] = inv;
    T* o = out + i * sout;
    for (int64_t c = 0; c < Dv; ++c) {
      const T val = row[c] * inv;
      o[c] = val == T(0) ? T(0) : val;
    }
  }
}

// Per-(b, h) work of the two paths (kernelized_causal.cpp, kernelized_attention.cpp).
template <class T>
void causal_forward_head(const Head<T>& s, int64_t chunk, T* out, int64_t sout, T* inv_out);
template <class T>
void causal_backward_head(const Head<T>& s, const HeadGrads<T>& g, int64_t chunk, const T* inv);

}  // namespace kernelized_detail
LONGATTN_ISA_END
}  // namespace longattn::kernels
