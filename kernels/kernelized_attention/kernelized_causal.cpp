// The causal path, chunk by chunk. Notation for one (b, h):
//   phi_j  key features with the row's own shift c_j (c_j = -inf: masked key),
//   R_i    running maximum of c_j over j <= i: the key stabiliser of query i,
//   w_ij = qf_i . phi_j e^{c_j - R_i}  (j <= i), all factors <= 1,
//   z_i = sum_j w_ij v_j / (sum_j w_ij + eps).
// Inside a chunk the C x C matrix of w is one GEMM and an elementwise scale; earlier chunks
// act through the state S' = sum_j phi_j e^{c_j - rho} [v_j, 1]^T, kept relative to rho = the
// running maximum at the end of the last chunk (so e^{rho - R_i} <= 1 for later queries).
//
// Backward: with gn_i the gradient of the augmented numerator (head.h),
//   g qf_i  = sum_{j<=i} P_ij phi_j          P_ij = (gn_i . [v_j, 1]) e^{c_j - R_i}
//   g phi_j = sum_{i>=j} P_ij qf_i,   g v_j = sum_{i>=j} w_ij gn_i[0:Dv].
// The first is a forward scan (recomputing S'; the denominators come from the forward when
// it saved them), the other two a reverse scan with the state
// G = sum_{i later} qf_i gn_i^T e^{rho - R_i}, rho = running maximum at the end of the chunk
// (so e^{c_j - rho} <= 1 for the chunk's keys and e^{rho - R_i} <= 1 for later queries).
// The maxima route their (eps-sized) gradient to the key and feature that attain them.
#include <algorithm>
#include <vector>

#include "kernels/common/blas.h"
#include "kernels/common/guarded_products.h"
#include "kernels/kernelized_attention/head.h"
#include "kernels/common/vec_exp.h"

namespace longattn::kernels {
LONGATTN_ISA_BEGIN
namespace kernelized_detail {
namespace {

// Scratch of one (b, h), allocated once per work item.
template <class T>
struct Chunk {
  int64_t C, m, W;
  std::vector<T> qf, kf, cq, ck, R, vaug, A, P, numer, gn, gphi, tmp, delta, inv, S;
  std::vector<int32_t> argq, argk, owner;  // owner: key index that attains R_i
  Chunk(int64_t C_, int64_t m_, int64_t Dv)
      : C(C_), m(m_), W(Dv + 1), qf(C * m), kf(C * m), cq(C), ck(C), R(C), vaug(C * W),
        A(C * C), P(C * C), numer(C * W), gn(C * W), gphi(C * m), tmp(C * m), delta(C), inv(C),
        S(m * W, T(0)), argq(C), argk(C), owner(C) {}
};

// Running maxima R[i] from `run` (the maximum before the chunk), with the key index that
// attains each (owner; -1 when none).
template <class T>
T running_max(const T* c, int64_t n, int64_t t0, T run, int64_t* run_owner, T* R, int32_t* owner) {
  for (int64_t i = 0; i < n; ++i) {
    if (c[i] > run) {
      run = c[i];
      *run_owner = t0 + i;
    }
    R[i] = run;
    owner[i] = static_cast<int32_t>(*run_owner);
  }
  return run;
}

// M[i][j] *= e^{c_j - R_i} for j <= i, 0 for j > i (M is n x n with row stride C).
template <class T>
void causal_scale(const Head<T>& s, T* M, int64_t C, int64_t n, const T* c, const T* R) {
  (void)s;
  for (int64_t i = 0; i < n; ++i) {
    T* row = M + i * C;
    const T Ri = R[i];
    if (Ri == neg_inf<T>()) {  // no key so far: the row is empty (avoids -inf - -inf)
      std::fill(row, row + n, T(0));
      continue;
    }
    // vexp(-inf) = 0 removes masked keys; elu/relu exponents are 0, vexp(0) = 1 exactly.
#pragma omp simd
    for (int64_t j = 0; j <= i; ++j) row[j] *= vexp(c[j] - Ri);
    std::fill(row + i + 1, row + n, T(0));
  }
}

// S' <- S' e^{from - to} + sum_j phi_j e^{c_j - to} [v_j, 1]^T  (phi is scaled in place).
template <class T>
void advance_state(const Head<T>& s, Chunk<T>& w, int64_t n, T from, T to) {
  if (to == neg_inf<T>()) return;  // no key so far
  if (from != neg_inf<T>() && to > from) {
    const T f = std::exp(from - to);
    for (auto& x : w.S) x *= f;
  }
  if (s.exp_map)
    for (int64_t j = 0; j < n; ++j) {
      const T f = s.fac(w.ck[j], to);
      for (int64_t r = 0; r < w.m; ++r) w.kf[j * w.m + r] *= f;
    }
  gemm(true, false, w.m, w.W, n, T(1), w.kf.data(), w.m, w.vaug.data(), w.W, T(1), w.S.data(),
       w.W);
}

// Chunk-local features and running maxima; returns the maximum at the chunk's end.
template <class T>
T chunk_features(const Head<T>& s, Chunk<T>& w, int64_t t0, int64_t n, T run, int64_t* run_owner) {
  s.keys(t0, n, w.kf.data(), w.ck.data(), w.argk.data(), w.vaug.data());
  s.queries(t0, n, w.qf.data(), w.cq.data(), w.argq.data());
  return running_max(w.ck.data(), n, t0, run, run_owner, w.R.data(), w.owner.data());
}

// The chunk's masked, scaled weights A = [w_ij].
template <class T>
void chunk_weights(const Head<T>& s, Chunk<T>& w, int64_t n) {
  gemm(false, true, n, n, w.m, T(1), w.qf.data(), w.m, w.kf.data(), w.m, T(0), w.A.data(), w.C);
  causal_scale(s, w.A.data(), w.C, n, w.ck.data(), w.R.data());
}

// The products of a chunk's causal weights (zero above the diagonal) with rows of the chunk's keys:
// out[i] = sum_{j <= i} M[i][j] x[j] (M n x n with row stride C, x and out n x cols). A GEMM
// multiplies the zero weights too, and 0 * inf = NaN: a non-finite later row of x would reach
// earlier rows, so chunks whose rows are not all finite take the product that skips zero weights.
template <class T>
void causal_rows_product(const T* M, int64_t C, int64_t n, const T* x, int64_t cols, T* out) {
  if (rows_finite(x, n, cols, cols)) {
    gemm(false, false, n, cols, n, T(1), M, C, x, cols, T(0), out, cols);
    return;
  }
  std::fill_n(out, n * cols, T(0));
  guarded_weighted_sum(n, n, cols, M, int64_t(1), C, x, cols, out, cols);
}

// numer = A vaug + e^{prev - R_i} qf_i S'.
template <class T>
void chunk_numerator(const Head<T>& s, Chunk<T>& w, int64_t n, T prev) {
  causal_rows_product(w.A.data(), w.C, n, w.vaug.data(), w.W, w.numer.data());
  if (prev == neg_inf<T>()) return;
  // Scale the query features by e^{prev - R_i} (a copy: qf is needed unscaled later).
  for (int64_t i = 0; i < n; ++i) {
    const T f = s.fac(prev, w.R[i]);
    for (int64_t r = 0; r < w.m; ++r) w.tmp[i * w.m + r] = w.qf[i * w.m + r] * f;
  }
  gemm(false, false, n, w.W, w.m, T(1), w.tmp.data(), w.m, w.S.data(), w.W, T(1),
       w.numer.data(), w.W);
}

}  // namespace

template <class T>
void causal_forward_head(const Head<T>& s, int64_t chunk, T* out, int64_t sout, T* inv_out) {
  Chunk<T> w(chunk, s.m, s.Dv);
  T prev = neg_inf<T>();
  int64_t owner = -1;
  for (int64_t t0 = 0; t0 < s.Nq; t0 += chunk) {
    const int64_t n = std::min(chunk, s.Nq - t0);
    const T end = chunk_features(s, w, t0, n, prev, &owner);
    chunk_weights(s, w, n);
    chunk_numerator(s, w, n, prev);
    write_output(s, w.numer.data(), n, out + t0 * sout, sout, inv_out ? inv_out + t0 : nullptr);
    advance_state(s, w, n, prev, end);
    if (end != neg_inf<T>()) prev = end;
  }
}

template <class T>
void causal_backward_head(const Head<T>& s, const HeadGrads<T>& g, int64_t chunk,
                          const T* saved_inv) {
  const int64_t N = s.Nq, m = s.m, Dv = s.Dv, W = Dv + 1, C = chunk;
  Chunk<T> w(chunk, m, Dv);
  // O(N) per (b, h): running maxima, inverse denominators, stabiliser gradient per key.
  std::vector<T> R_all(N), inv_all(N), grad_c(N, T(0));

  // Forward scan: denominators, gradient of q.
  T prev = neg_inf<T>();
  int64_t owner = -1;
  for (int64_t t0 = 0; t0 < N; t0 += C) {
    const int64_t n = std::min(C, N - t0);
    const T end = chunk_features(s, w, t0, n, prev, &owner);
    if (!saved_inv) {
      chunk_weights(s, w, n);
      chunk_numerator(s, w, n, prev);
    }
    for (int64_t i = 0; i < n; ++i) {
      const T inv = saved_inv ? saved_inv[t0 + i] : s.inverse_denominator(w.numer[i * W + Dv]);
      w.inv[i] = w.R[i] == neg_inf<T>() ? T(0) : inv;
      R_all[t0 + i] = w.R[i];
      inv_all[t0 + i] = w.inv[i];
    }
    numerator_grads(s, g, t0, n, w.inv.data(), w.gn.data(), w.delta.data());
    if (s.exp_map)
      for (int64_t i = 0; i < n; ++i)
        if (w.owner[i] >= 0) grad_c[w.owner[i]] += w.delta[i];
    // g qf = P phi + e^{prev - R_i} gn_i S'^T.
    gemm(false, true, n, n, W, T(1), w.gn.data(), W, w.vaug.data(), W, T(0), w.P.data(), C);
    causal_scale(s, w.P.data(), C, n, w.ck.data(), w.R.data());
    causal_rows_product(w.P.data(), C, n, w.kf.data(), m, w.gphi.data());
    if (prev != neg_inf<T>()) {
      for (int64_t i = 0; i < n; ++i) {
        const T f = s.fac(prev, w.R[i]);
        for (int64_t c = 0; c < W; ++c) w.gn[i * W + c] *= f;
      }
      gemm(false, true, n, m, W, T(1), w.gn.data(), W, w.S.data(), W, T(1), w.gphi.data(), m);
    }
    feature_map_backward(s.fm, s.q + t0 * s.sq, s.sq, n, w.qf.data(), m, w.argq.data(),
                         w.gphi.data(), m, s.exp_map ? w.delta.data() : nullptr,
                         g.gq + t0 * g.sgq, g.sgq);
    advance_state(s, w, n, prev, end);
    if (end != neg_inf<T>()) prev = end;
  }

  // Reverse scan: gradients of k and v.
  std::vector<T>& G = w.S;  // reused as the reverse state
  std::fill(G.begin(), G.end(), T(0));
  const int64_t last = ((N - 1) / C) * C;
  for (int64_t t0 = last; t0 >= 0; t0 -= C) {
    const int64_t n = std::min(C, N - t0);
    const T rho = R_all[t0 + n - 1];
    if (rho == neg_inf<T>()) {  // no key up to here takes part: zero gradients
      for (int64_t j = 0; j < n; ++j) {
        std::fill_n(g.gk + (t0 + j) * g.sgk, s.D, T(0));
        std::fill_n(g.gv + (t0 + j) * g.sgv, Dv, T(0));
      }
      continue;
    }
    s.keys(t0, n, w.kf.data(), w.ck.data(), w.argk.data(), w.vaug.data());
    s.queries(t0, n, w.qf.data(), w.cq.data(), w.argq.data());
    std::copy_n(R_all.data() + t0, n, w.R.data());
    numerator_grads(s, g, t0, n, inv_all.data() + t0, w.gn.data(), static_cast<T*>(nullptr));
    gemm(false, true, n, n, m, T(1), w.qf.data(), m, w.kf.data(), m, T(0), w.A.data(), C);
    causal_scale(s, w.A.data(), C, n, w.ck.data(), w.R.data());
    gemm(false, true, n, n, W, T(1), w.gn.data(), W, w.vaug.data(), W, T(0), w.P.data(), C);
    causal_scale(s, w.P.data(), C, n, w.ck.data(), w.R.data());
    // g phi_j = (P^T qf)_j + e^{c_j - rho} G [v_j, 1].
    gemm(true, false, n, m, n, T(1), w.P.data(), C, w.qf.data(), m, T(0), w.gphi.data(), m);
    gemm(false, true, n, m, W, T(1), w.vaug.data(), W, G.data(), W, T(0), w.tmp.data(), m);
    for (int64_t j = 0; j < n; ++j) {
      const T f = s.fac(w.ck[j], rho);
      T* gr = w.gphi.data() + j * m;
      const T* tr = w.tmp.data() + j * m;
      if (w.ck[j] == neg_inf<T>()) std::fill_n(gr, m, T(0));
      else
        for (int64_t r = 0; r < m; ++r) gr[r] += f * tr[r];
    }
    // g v = A^T gn[:, 0:Dv] + (phi_j e^{c_j - rho}) G[:, 0:Dv]; phi is scaled in a copy.
    T* gv = g.gv + t0 * g.sgv;
    gemm(true, false, n, Dv, n, T(1), w.A.data(), C, w.gn.data(), W, T(0), gv, g.sgv);
    for (int64_t j = 0; j < n; ++j) {
      const T f = s.fac(w.ck[j], rho);
      for (int64_t r = 0; r < m; ++r) w.tmp[j * m + r] = w.kf[j * m + r] * f;
    }
    gemm(false, false, n, Dv, m, T(1), w.tmp.data(), m, G.data(), W, T(1), gv, g.sgv);
    feature_map_backward(s.fm, s.k + t0 * s.sk, s.sk, n, w.kf.data(), m, w.argk.data(),
                         w.gphi.data(), m, s.exp_map ? grad_c.data() + t0 : nullptr,
                         g.gk + t0 * g.sgk, g.sgk);
    s.zero_masked_key_grads(t0, n, g.gk + t0 * g.sgk, g.sgk);
    // G <- G e^{rho' - rho} + sum_{i in chunk} qf_i gn_i^T e^{rho' - R_i}, rho' the maximum
    // before this chunk (every R_i here and later is >= rho').
    const T rho_next = t0 > 0 ? R_all[t0 - 1] : neg_inf<T>();
    if (rho_next == neg_inf<T>()) {
      std::fill(G.begin(), G.end(), T(0));  // no earlier key takes part: G is never read
      continue;
    }
    if (rho_next < rho) {
      const T f = std::exp(rho_next - rho);
      for (auto& x : G) x *= f;
    }
    for (int64_t i = 0; i < n; ++i) {
      const T f = s.fac(rho_next, w.R[i]);
      for (int64_t c = 0; c < W; ++c) w.gn[i * W + c] *= f;
    }
    gemm(true, false, m, W, n, T(1), w.qf.data(), m, w.gn.data(), W, T(1), G.data(), W);
  }
}

template void causal_forward_head<float>(const Head<float>&, int64_t, float*, int64_t, float*);
template void causal_forward_head<double>(const Head<double>&, int64_t, double*, int64_t, double*);
template void causal_backward_head<float>(const Head<float>&, const HeadGrads<float>&, int64_t,
                                          const float*);
template void causal_backward_head<double>(const Head<double>&, const HeadGrads<double>&, int64_t,
                                           const double*);

}  // namespace kernelized_detail
LONGATTN_ISA_END
}  // namespace longattn::kernels
