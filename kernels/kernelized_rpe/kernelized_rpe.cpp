// Luo et al.'s kernelized attention with RPE by chunked FFT Toeplitz products.
//
// Notation per (batch, head): a_i = phi_q_i, K_j = phi_k_j, vt_j = [v_j, 1] (Dv + 1 columns),
// A_j[m', d] = K_j[m'] vt_j[d], U = T A with T_ij = w[j - i + N - 1] (the Toeplitz product),
// nd_i[d] = a_i . U_i[:, d] (numerators, then the denominator at d = Dv), z_i = nd_i[:Dv] / den_i.
//
// Backward: with gh_i[d] = gz_i[d] / den_i (d < Dv) and gh_i[Dv] = -(gz_i . z_i) / den_i,
//   grad a_i[m'] = sum_d gh_i[d] U_i[m', d]
//   E_i[m', d] = a_i[m'] gh_i[d] (the gradient of U), F = T^T E (the gradient of A):
//   grad K_j[m'] = sum_d F_j[m', d] vt_j[d],  grad v_j[d] = sum_m' F_j[m', d] K_j[m']
//   grad w[N - 1 + r] = sum_{i, m', d} E_i[m', d] A_{i + r}[m', d]   (a correlation, by FFT).
// Each chunk holds one value column d and up to 2W consecutive features m'.
#include "kernels/kernelized_rpe/kernelized_rpe.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/common/parallel.h"
#include "kernels/toeplitz/toeplitz_fft.h"

namespace longattn::kernels {
LONGATTN_ISA_BEGIN

namespace {

using namespace toeplitz_detail;

struct Chunk {
  int64_t d, m0, nl;  // value column (Dv = the denominator), first feature, feature count
};

std::vector<Chunk> make_chunks(int64_t m, int64_t Dv, int lanes) {
  std::vector<Chunk> chunks;
  for (int64_t d = 0; d <= Dv; ++d)
    for (int64_t m0 = 0; m0 < m; m0 += lanes) chunks.push_back({d, m0, std::min<int64_t>(lanes, m - m0)});
  return chunks;
}

template <class T>
bool key_on(const KernelizedRpeParams<T>& p, int64_t b, int64_t j) {
  return p.key_padding_mask == nullptr || p.key_padding_mask[b * p.mask_stride_b + j] != 0;
}

// buf[j][l] = feat_j[m0 + l] * scale_j for j < N, l < nl; zero for l >= nl.
template <class T, int W, class Scale>
void load_scaled(BHND<const T> feat, int64_t b, int64_t h, const Chunk& c, int64_t L, T* buf,
                 Scale scale) {
  const int64_t N = feat.N;
  for (int64_t j = 0; j < N; ++j) {
    const T* f = feat.row(b, h, j) + c.m0;
    const T s = scale(j);
    T* dst = buf + j * 2 * W;
    if (c.nl == 2 * W) {
#pragma omp simd
      for (int l = 0; l < 2 * W; ++l) dst[l] = f[l] * s;
    } else {
      for (int l = 0; l < 2 * W; ++l) dst[l] = l < c.nl ? f[l] * s : T(0);
    }
  }
  (void)L;  // rows [N, L) are left to fft::forward_padded
}

// The per-head kernel spectra (1/L folded in), [H][2L].
template <class T>
std::vector<T> weight_spectra(const KernelizedRpeParams<T>& p, const fft::Plan<T>& plan) {
  const int64_t H = p.phi_q.H, L = plan.n;
  std::vector<T> z(H * 2 * L);
  kernel_spectra(plan, p.weights, p.weights_stride_h, H, p.phi_q.N, p.causal, T(1) / T(L), z.data());
  return z;
}


}  // namespace

template <class T>
void kernelized_rpe_forward(const KernelizedRpeParams<T>& p, BHND<T> out, T* den) {
  constexpr int W = fft::kLanes<T>;
  const int64_t B = p.phi_q.B, H = p.phi_q.H, N = p.phi_q.N, m = p.phi_q.D, Dv = p.v.D;
  if (B * H * N == 0) return;
  const int64_t L = fft::fast_length(2 * N - 1);
  auto plan = fft::plan<T>(L);
  const std::vector<T> z = weight_spectra(p, *plan);
  const auto chunks = make_chunks(m, Dv, 2 * W);
  const int nt = resolve_threads(p.threads);
  std::vector<AlignedBuffer<T>> bufs(nt), accs(nt);
  parallel_for(B * H, nt, [&](int64_t bh) {
    const int64_t b = bh / H, h = bh % H;
    auto& buf = bufs[thread_index()];
    auto& nd = accs[thread_index()];  // [N][Dv + 1] numerators and denominator
    buf.resize(L * 2 * W);
    nd.resize(N * (Dv + 1));
    std::fill(nd.data(), nd.data() + N * (Dv + 1), T(0));
    for (const Chunk& c : chunks) {
      load_scaled<T, W>(p.phi_k, b, h, c, L, buf.data(), [&](int64_t j) {
        if (!key_on(p, b, j)) return T(0);
        return c.d < Dv ? p.v.row(b, h, j)[c.d] : T(1);
      });
      fft::forward_padded<T, W>(*plan, buf.data(), N);
      fft::inverse_product<T, W>(*plan, buf.data(), z.data() + h * 2 * L, false, N);
      for (int64_t i = 0; i < N; ++i) {
        const T* a = p.phi_q.row(b, h, i) + c.m0;
        const T* u = buf.data() + i * 2 * W;
        T s = 0;
#pragma omp simd reduction(+ : s)
        for (int64_t l = 0; l < c.nl; ++l) s += a[l] * u[l];
        nd.data()[i * (Dv + 1) + c.d] += s;
      }
    }
    // Zero denominators must give zero outputs, but the FFT turns an exact zero into rounding
    // noise. So a row counts as empty when no key takes part (exact), or when its denominator
    // is below the FFT's error bound ~ eps log2(L) |a_i|_1 |w|_2 max_m' |K[:, m']|_2 (then the
    // computed ratio would be noise anyway). den = 0 marks such rows for the backward.
    const T* w = p.weights + h * p.weights_stride_h;
    double w2 = 0, k2 = 0;
    for (int64_t r = 0; r < 2 * N - 1; ++r) w2 += double(w[r]) * w[r];
    for (int64_t mm = 0; mm < m; ++mm) {
      double s = 0;
      for (int64_t j = 0; j < N; ++j)
        if (key_on(p, b, j)) s += double(p.phi_k.row(b, h, j)[mm]) * p.phi_k.row(b, h, j)[mm];
      k2 = std::max(k2, s);
    }
    const double noise = std::numeric_limits<T>::epsilon() * std::log2(double(L)) *
                         std::sqrt(w2) * std::sqrt(k2);
    int64_t first_key = N;
    for (int64_t j = 0; j < N && first_key == N; ++j)
      if (key_on(p, b, j)) first_key = j;
    T* dn = den + bh * N;
    for (int64_t i = 0; i < N; ++i) {
      const T* r = nd.data() + i * (Dv + 1);
      T* o = out.row(b, h, i);
      const T* a = p.phi_q.row(b, h, i);
      double a1 = 0;
      for (int64_t mm = 0; mm < m; ++mm) a1 += std::abs(double(a[mm]));
      const bool empty = first_key == N || (p.causal && first_key > i) || !(r[Dv] > noise * a1);
      dn[i] = empty ? T(0) : r[Dv] + T(p.eps);
      const T inv = empty ? T(0) : T(1) / dn[i];
      for (int64_t d = 0; d < Dv; ++d) o[d] = r[d] * inv;
    }
  });
}

template <class T>
void kernelized_rpe_backward(const KernelizedRpeParams<T>& p, const KernelizedRpeGrads<T>& g) {
  constexpr int W = fft::kLanes<T>;
  const int64_t B = p.phi_q.B, H = p.phi_q.H, N = p.phi_q.N, m = p.phi_q.D, Dv = p.v.D;
  const int64_t R = 2 * N - 1;
  const int64_t outs = p.weights_stride_h == 0 ? 1 : H;
  if (B * H * N == 0) {
    if (g.grad_weights && N > 0) std::fill(g.grad_weights, g.grad_weights + outs * R, T(0));
    return;
  }
  const int64_t L = fft::fast_length(2 * N - 1);
  auto plan = fft::plan<T>(L);
  const std::vector<T> z = weight_spectra(p, *plan);
  const auto chunks = make_chunks(m, Dv, 2 * W);
  const int nt = resolve_threads(p.threads);
  const bool want_w = g.grad_weights != nullptr;
  std::vector<T> cross(want_w ? B * H * 2 * L : 0, T(0));  // per (b, h): summed in order later
  std::vector<AlignedBuffer<T>> abufs(nt), ebufs(nt), ghs(nt);
  parallel_for(B * H, nt, [&](int64_t bh) {
    const int64_t b = bh / H, h = bh % H;
    const int t = thread_index();
    abufs[t].resize(L * 2 * W);
    ebufs[t].resize(L * 2 * W);
    ghs[t].resize(N * (Dv + 1));
    T *ab = abufs[t].data(), *eb = ebufs[t].data(), *gh = ghs[t].data();
    const T* dn = g.den + bh * N;
    for (int64_t i = 0; i < N; ++i) {
      const T* gz = g.grad_out.row(b, h, i);
      const T* zi = g.out.row(b, h, i);
      T* r = gh + i * (Dv + 1);
      const T inv = dn[i] > T(0) ? T(1) / dn[i] : T(0);
      T dot = 0;
      for (int64_t d = 0; d < Dv; ++d) r[d] = gz[d] * inv, dot += gz[d] * zi[d];
      r[Dv] = -dot * inv;
      std::fill(g.grad_phi_q.row(b, h, i), g.grad_phi_q.row(b, h, i) + m, T(0));
      std::fill(g.grad_phi_k.row(b, h, i), g.grad_phi_k.row(b, h, i) + m, T(0));
      std::fill(g.grad_v.row(b, h, i), g.grad_v.row(b, h, i) + Dv, T(0));
    }
    for (const Chunk& c : chunks) {
      auto vt = [&](int64_t j) {
        if (!key_on(p, b, j)) return T(0);
        return c.d < Dv ? p.v.row(b, h, j)[c.d] : T(1);
      };
      load_scaled<T, W>(p.phi_k, b, h, c, L, ab, vt);
      load_scaled<T, W>(p.phi_q, b, h, c, L, eb, [&](int64_t i) { return gh[i * (Dv + 1) + c.d]; });
      fft::forward_padded<T, W>(*plan, ab, N);
      fft::forward_padded<T, W>(*plan, eb, N);
      if (want_w) accumulate_cross<T, W>(eb, ab, L, cross.data() + bh * 2 * L);
      fft::inverse_product<T, W>(*plan, ab, z.data() + h * 2 * L, false, N);  // U = T A
      fft::inverse_product<T, W>(*plan, eb, z.data() + h * 2 * L, true, N);   // F = T^T E
      for (int64_t i = 0; i < N; ++i) {
        const T ghd = gh[i * (Dv + 1) + c.d];
        const T* u = ab + i * 2 * W;
        T* ga = g.grad_phi_q.row(b, h, i) + c.m0;
#pragma omp simd
        for (int64_t l = 0; l < c.nl; ++l) ga[l] += ghd * u[l];
      }
      for (int64_t j = 0; j < N; ++j) {
        if (!key_on(p, b, j)) continue;  // masked keys: zero gradients
        const T s = vt(j);
        const T* f = eb + j * 2 * W;
        const T* kf = p.phi_k.row(b, h, j) + c.m0;
        T* gk = g.grad_phi_k.row(b, h, j) + c.m0;
        T dv = 0;
#pragma omp simd reduction(+ : dv)
        for (int64_t l = 0; l < c.nl; ++l) {
          gk[l] += f[l] * s;
          dv += f[l] * kf[l];
        }
        if (c.d < Dv) g.grad_v.row(b, h, j)[c.d] += dv;
      }
    }
  });
  if (!want_w) return;
  std::vector<T> sum(outs * 2 * L, T(0));
  parallel_for(outs, nt, [&](int64_t o) {
    T* s = sum.data() + o * 2 * L;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h) {
        if (outs == H && h != o) continue;
        const T* src = cross.data() + (b * H + h) * 2 * L;
        for (int64_t f = 0; f < 2 * L; ++f) s[f] += src[f];
      }
  });
  coeff_grads_from_cross(*plan, sum.data(), outs, N, p.causal, g.grad_weights);
}

#define LONGATTN_KRPE_INSTANTIATE(T)                                                     \
  template void kernelized_rpe_forward<T>(const KernelizedRpeParams<T>&, BHND<T>, T*); \
  template void kernelized_rpe_backward<T>(const KernelizedRpeParams<T>&, const KernelizedRpeGrads<T>&);
LONGATTN_KRPE_INSTANTIATE(float)
LONGATTN_KRPE_INSTANTIATE(double)
#undef LONGATTN_KRPE_INSTANTIATE

LONGATTN_ISA_END
}  // namespace longattn::kernels
