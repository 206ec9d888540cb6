// Entry points and the non-causal path: one pass over the keys builds the augmented state
// S' = [sum_j phi(k_j) v_j^T | sum_j phi(k_j)] (m x (Dv+1)) by GEMM, one pass over the
// queries applies it. Keys are stabilised online: the state is kept relative to the largest
// key exponent R seen so far and rescaled when a block raises it.
#include <algorithm>
#include <vector>

#include "kernels/common/blas.h"
#include "kernels/common/parallel.h"
#include "kernels/kernelized_attention/head.h"

namespace longattn::kernels {
LONGATTN_ISA_BEGIN
namespace kernelized_detail {
namespace {

constexpr int64_t kRowBlock = 256;  // rows of q or k processed per GEMM

// Key state of one head: S' relative to R (R = -inf: no key takes part, S' = 0), and the
// global index of the key whose exponent is R (its argmax feature receives R's gradient).
template <class T>
struct KeyState {
  std::vector<T> S;
  T R = neg_inf<T>();
  int64_t argmax_key = -1;
};

template <class T>
void accumulate_keys(const Head<T>& s, KeyState<T>& st, T* phi, T* c, int32_t* arg, T* vaug) {
  const int64_t m = s.m, W = s.Dv + 1;
  st.S.assign(m * W, T(0));
  for (int64_t j0 = 0; j0 < s.Nk; j0 += kRowBlock) {
    const int64_t n = std::min(kRowBlock, s.Nk - j0);
    s.keys(j0, n, phi, c, arg, vaug);
    int64_t best = 0;
    for (int64_t j = 1; j < n; ++j)
      if (c[j] > c[best]) best = j;
    if (c[best] == neg_inf<T>()) continue;  // every key of the block is masked
    if (c[best] > st.R) {
      if (st.R != neg_inf<T>()) {
        const T f = std::exp(st.R - c[best]);
        for (auto& x : st.S) x *= f;
      }
      st.R = c[best];
      st.argmax_key = j0 + best;
    }
    if (s.exp_map)
      for (int64_t j = 0; j < n; ++j) {
        const T f = s.fac(c[j], st.R);
        for (int64_t r = 0; r < m; ++r) phi[j * m + r] *= f;
      }
    gemm(true, false, m, W, n, T(1), phi, m, vaug, W, T(1), st.S.data(), W);
  }
}

template <class T>
void forward_head(const Head<T>& s, T* out, int64_t sout, T* inv_out) {
  const int64_t m = s.m, W = s.Dv + 1, C = kRowBlock;
  std::vector<T> phi(C * m), c(C), vaug(C * W), numer(C * W);
  std::vector<int32_t> arg(C);
  KeyState<T> st;
  accumulate_keys(s, st, phi.data(), c.data(), arg.data(), vaug.data());
  for (int64_t i0 = 0; i0 < s.Nq; i0 += C) {
    const int64_t n = std::min(C, s.Nq - i0);
    if (st.R == neg_inf<T>()) {
      std::fill(numer.begin(), numer.end(), T(0));
    } else {
      s.queries(i0, n, phi.data(), c.data(), arg.data());
      gemm(false, false, n, W, m, T(1), phi.data(), m, st.S.data(), W, T(0), numer.data(), W);
    }
    write_output(s, numer.data(), n, out + i0 * sout, sout, inv_out ? inv_out + i0 : nullptr);
  }
}

template <class T>
void backward_head(const Head<T>& s, const HeadGrads<T>& g, const T* saved_inv) {
  const int64_t m = s.m, Dv = s.Dv, W = Dv + 1, C = kRowBlock;
  std::vector<T> phi(C * m), c(C), vaug(C * W), numer(C * W), gn(C * W), gphi(C * m), inv(C),
      delta(C);
  std::vector<int32_t> arg(C);
  KeyState<T> st;
  accumulate_keys(s, st, phi.data(), c.data(), arg.data(), vaug.data());
  if (st.R == neg_inf<T>()) {  // no key takes part: every output is 0, so are the gradients
    for (int64_t i = 0; i < s.Nq; ++i) std::fill_n(g.gq + i * g.sgq, s.D, T(0));
    for (int64_t j = 0; j < s.Nk; ++j) {
      std::fill_n(g.gk + j * g.sgk, s.D, T(0));
      std::fill_n(g.gv + j * g.sgv, Dv, T(0));
    }
    return;
  }
  // Queries: gradient of q, and G = sum_i phi(q_i) gn_i^T, the gradient of S'.
  std::vector<T> G(m * W, T(0));
  T grad_R = 0;
  for (int64_t i0 = 0; i0 < s.Nq; i0 += C) {
    const int64_t n = std::min(C, s.Nq - i0);
    s.queries(i0, n, phi.data(), c.data(), arg.data());
    if (saved_inv) {
      std::copy_n(saved_inv + i0, n, inv.data());
    } else {
      gemm(false, false, n, W, m, T(1), phi.data(), m, st.S.data(), W, T(0), numer.data(), W);
      for (int64_t i = 0; i < n; ++i) inv[i] = s.inverse_denominator(numer[i * W + Dv]);
    }
    numerator_grads(s, g, i0, n, inv.data(), gn.data(), delta.data());
    gemm(false, true, n, m, W, T(1), gn.data(), W, st.S.data(), W, T(0), gphi.data(), m);
    feature_map_backward(s.fm, s.q + i0 * s.sq, s.sq, n, phi.data(), m, arg.data(), gphi.data(),
                         m, s.exp_map ? delta.data() : nullptr, g.gq + i0 * g.sgq, g.sgq);
    gemm(true, false, m, W, n, T(1), phi.data(), m, gn.data(), W, T(1), G.data(), W);
    // Every weight of every row carries e^{-R}: R's gradient is the sum of the rows'.
    for (int64_t i = 0; i < n; ++i) grad_R += delta[i];
  }
  // Keys: effective features phi(k_j) e^{c_j - R}; gphi_j = G vaug_j, gv_j = G_v^T phi_j.
  for (int64_t j0 = 0; j0 < s.Nk; j0 += C) {
    const int64_t n = std::min(C, s.Nk - j0);
    s.keys(j0, n, phi.data(), c.data(), arg.data(), vaug.data());
    if (s.exp_map)
      for (int64_t j = 0; j < n; ++j) {
        const T f = s.fac(c[j], st.R);
        for (int64_t r = 0; r < m; ++r) phi[j * m + r] *= f;
      }
    gemm(false, true, n, m, W, T(1), vaug.data(), W, G.data(), W, T(0), gphi.data(), m);
    gemm(false, false, n, Dv, m, T(1), phi.data(), m, G.data(), W, T(0), g.gv + j0 * g.sgv,
         g.sgv);
    for (int64_t j = 0; j < n; ++j) {
      delta[j] = (j0 + j == st.argmax_key) ? grad_R : T(0);
      if (c[j] == neg_inf<T>()) std::fill_n(gphi.data() + j * m, m, T(0));
    }
    // phi already carries e^{c_j - R}; passing the effective features and their gradient
    // gives the same g_phi * phi products as the row-own features would.
    feature_map_backward(s.fm, s.k + j0 * s.sk, s.sk, n, phi.data(), m, arg.data(), gphi.data(),
                         m, s.exp_map ? delta.data() : nullptr, g.gk + j0 * g.sgk, g.sgk);
    s.zero_masked_key_grads(j0, n, g.gk + j0 * g.sgk, g.sgk);
  }
}

}  // namespace

// Threads worth starting: a parallel region costs tens of microseconds (far more on a loaded
// machine), more than a small problem's whole work, so small problems run inline.
template <class T>
int effective_threads(const KernelizedAttentionParams<T>& p) {
  const double work = double(p.q.B) * p.q.H * std::max(p.q.N, p.k.N) *
                      kernelized_feature_dim(p) * (p.v.D + 1);
  return work < double(1 << 20) ? 1 : p.threads;
}

}  // namespace kernelized_detail

template <class T>
void kernelized_attention_forward(const KernelizedAttentionParams<T>& p, BHND<T> out,
                                  T* inv_denom) {
  using namespace kernelized_detail;
  const int64_t B = p.q.B, H = p.q.H;
  const int64_t chunk = p.chunk > 0 ? p.chunk : 64;
  parallel_for(B * H, effective_threads(p), [&](int64_t bh) {
    const int64_t b = bh / H, h = bh % H;
    const Head<T> s = head_of(p, b, h);
    T* inv = inv_denom ? inv_denom + bh * p.q.N : nullptr;
    if (p.causal)
      causal_forward_head(s, chunk, out.row(b, h, 0), out.sn, inv);
    else
      forward_head(s, out.row(b, h, 0), out.sn, inv);
  });
}

template <class T>
void kernelized_attention_backward(const KernelizedAttentionParams<T>& p,
                                   const KernelizedAttentionGrads<T>& g) {
  using namespace kernelized_detail;
  const int64_t B = p.q.B, H = p.q.H;
  const int64_t chunk = p.chunk > 0 ? p.chunk : 64;
  parallel_for(B * H, effective_threads(p), [&](int64_t bh) {
    const int64_t b = bh / H, h = bh % H;
    const Head<T> s = head_of(p, b, h);
    const HeadGrads<T> hg = head_grads_of(g, b, h);
    const T* inv = g.inv_denom ? g.inv_denom + bh * p.q.N : nullptr;
    if (p.causal)
      causal_backward_head(s, hg, chunk, inv);
    else
      backward_head(s, hg, inv);
  });
}

template void kernelized_attention_forward<float>(const KernelizedAttentionParams<float>&,
                                                  BHND<float>, float*);
template void kernelized_attention_forward<double>(const KernelizedAttentionParams<double>&,
                                                   BHND<double>, double*);
template void kernelized_attention_backward<float>(const KernelizedAttentionParams<float>&,
                                                   const KernelizedAttentionGrads<float>&);
template void kernelized_attention_backward<double>(const KernelizedAttentionParams<double>&,
                                                    const KernelizedAttentionGrads<double>&);

LONGATTN_ISA_END
}  // namespace longattn::kernels
