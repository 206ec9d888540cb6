// Luo et al.'s kernelized attention with RPE: chunked FFT Toeplitz products on a detrended bias,
// with a direct fallback for the rows the FFT cannot resolve (see the header).
//
// Notation per (batch, head): a_i = phi_q_i, vt_j = [v_j, 1] (Dv + 1 columns), the trend s and
// c_w, c_k of the header, w'[r] = e^{b[r] - s r - c_w}, kappa_j = e^{s j + l_j - c_k} (0 for a
// masked key), K'_j = kappa_j K_j, A_j[m', d] = K'_j[m'] vt_j[d], U = T' A (T'_ij = w'[j - i]),
// nd_i[d] = a_i . U_i[:, d]. The true weights are e^{b[j-i] + l_j} = w'[j-i] kappa_j e^{G_i} with
// G_i = c_w + c_k - s i, so z_i = nd_i[:Dv] / (nd_i[Dv] + eps e^{mu_i - G_i}).
//
// Backward (FFT rows): with D_i the saved denominator, gh_i[d] = gz_i[d] / D_i (d < Dv) and
// gh_i[Dv] = -(gz_i . z_i) / D_i,
//   grad a_i[m'] = sum_d gh_i[d] U_i[m', d]
//   E_i[m', d] = a_i[m'] gh_i[d] (the gradient of U), F = T'^T E (the gradient of A):
//   grad K_j[m'] = kappa_j sum_d F_j[m', d] vt_j[d],  grad v_j[d] = kappa_j sum_m' F_j[m', d] K_j[m']
//   grad w'[N - 1 + r] = sum_{i, m', d} E_i[m', d] A_{i + r}[m', d] (a correlation, by FFT), and
//   grad b[r] = w'[r] grad w'[r] (s, c_w, c_k are constants: the factorisation holds for any).
// Direct rows take part in none of the FFT sums and are differentiated term by term.
#include "kernels/kernelized_rpe/kernelized_rpe.h"

#include <algorithm>
#include <type_traits>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/common/parallel.h"
#include "kernels/toeplitz/toeplitz_fft.h"

namespace longattn::kernels {
LONGATTN_ISA_BEGIN

namespace {

using namespace toeplitz_detail;

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

struct Chunk {
  int64_t d, m0, nl;  // value column (Dv = the denominator), first feature, feature count
};

std::vector<Chunk> make_chunks(int64_t m, int64_t Dv, int lanes) {
  std::vector<Chunk> chunks;
  for (int64_t d = 0; d <= Dv; ++d)
    for (int64_t m0 = 0; m0 < m; m0 += lanes) chunks.push_back({d, m0, std::min<int64_t>(lanes, m - m0)});
  return chunks;
}

// Largest tolerated ratio of the FFT's error bound to a row's denominator (output error about
// twice this, relative to the output's scale); rows above it are computed directly.
template <class T>
constexpr double kTau = sizeof(T) == sizeof(float) ? 1e-5 : 1e-11;

// The trend of one head's bias and the FFT weights w' (see the header).
template <class T>
struct Trend {
  double s = 0, cw = kNegInf;  // cw = -inf: every offset in use is -inf, no row has a key
  std::vector<T> w;           // [2N - 1]
};

// Largest exponent deficit over rows for trend s: the global scale of the product,
// max_r (b_r - s r) + max_j s j, minus the scale of row i's largest weight, s i + W_i.
double deficit(const double* b, int64_t N, bool causal, const std::vector<double>& W, double s) {
  const int64_t R = causal ? N : 2 * N - 1;
  double top = kNegInf;
  for (int64_t t = 0; t < R; ++t) top = std::max(top, b[t] - s * double(t - (N - 1)));
  double low = std::numeric_limits<double>::infinity();
  for (int64_t i = 0; i < N; ++i)
    if (W[i] != kNegInf) low = std::min(low, s * double(i) + W[i]);
  return top + std::max(0.0, s * double(N - 1)) - low;
}

template <class T>
Trend<T> fit_trend(const T* bias, int64_t N, bool causal) {
  const int64_t R = 2 * N - 1, used = causal ? N : R;
  std::vector<double> b(bias, bias + R);
  // W_i = max of b over row i's offsets: t in [N-1-i, 2N-2-i] (causal: [N-1-i, N-1]).
  std::vector<double> W(N);
  if (causal) {
    double run = kNegInf;
    for (int64_t i = 0; i < N; ++i) W[i] = run = std::max(run, b[N - 1 - i]);
  } else {  // sliding maximum of width N by block prefix / suffix maxima
    std::vector<double> pre(R), suf(R);
    for (int64_t t = 0; t < R; ++t) pre[t] = t % N == 0 ? b[t] : std::max(pre[t - 1], b[t]);
    for (int64_t t = R - 1; t >= 0; --t)
      suf[t] = (t + 1) % N == 0 || t == R - 1 ? b[t] : std::max(suf[t + 1], b[t]);
    for (int64_t i = 0; i < N; ++i) W[i] = std::max(suf[N - 1 - i], pre[2 * N - 2 - i]);
  }
  Trend<T> tr;
  double lo = std::numeric_limits<double>::infinity(), hi = kNegInf;
  for (int64_t t = 0; t < used; ++t)
    if (b[t] != kNegInf) lo = std::min(lo, b[t]), hi = std::max(hi, b[t]);
  tr.w.assign(R, T(0));
  if (hi == kNegInf) return tr;
  // deficit(s) is convex (a sum of maxima of affine functions of s); a useful slope never
  // exceeds the spread per offset.
  double a = -(hi - lo), c = hi - lo;
  for (int it = 0; it < 100 && c - a > 1e-12 * (1 + hi - lo); ++it) {
    const double m1 = a + (c - a) / 3, m2 = c - (c - a) / 3;
    if (deficit(b.data(), N, causal, W, m1) <= deficit(b.data(), N, causal, W, m2)) c = m2;
    else a = m1;
  }
  tr.s = 0.5 * (a + c);
  if (deficit(b.data(), N, causal, W, 0.0) <= deficit(b.data(), N, causal, W, tr.s)) tr.s = 0;
  for (int64_t t = 0; t < used; ++t) tr.cw = std::max(tr.cw, b[t] - tr.s * double(t - (N - 1)));
  for (int64_t t = 0; t < used; ++t)
    tr.w[t] = static_cast<T>(std::exp(b[t] - tr.s * double(t - (N - 1)) - tr.cw));
  return tr;
}

// Everything one (batch, head) needs besides the features.
template <class T>
struct Slice {
  int64_t b, h, bh, N;
  const T* bias;                  // this head's b
  const Trend<T>* trend;
  std::vector<T> kappa;           // [N], 0 for masked keys
  std::vector<uint8_t> on;        // [N] the key takes part
  std::vector<double> ell;        // [N] l_j (0 when masked: never used)
  double ck = kNegInf;            // -inf: no key takes part
  int64_t first_key = 0;

  bool row_empty(int64_t i, bool causal) const {
    return ck == kNegInf || trend->cw == kNegInf || (causal && first_key > i);
  }
  double G(int64_t i) const { return trend->cw + ck - trend->s * double(i); }
};

template <class T>
Slice<T> make_slice(const KernelizedRpeParams<T>& p, const std::vector<Trend<T>>& trends, int64_t bh) {
  const int64_t H = p.phi_q.H, N = p.phi_q.N;
  Slice<T> sl;
  sl.b = bh / H, sl.h = bh % H, sl.bh = bh, sl.N = N;
  sl.bias = p.rel_bias + sl.h * p.bias_stride_h;
  sl.trend = &trends[p.bias_stride_h == 0 ? 0 : sl.h];
  sl.kappa.assign(N, T(0));
  sl.on.assign(N, 0);
  sl.ell.assign(N, 0.0);
  sl.first_key = N;
  for (int64_t j = 0; j < N; ++j) {
    sl.on[j] = p.key_padding_mask == nullptr || p.key_padding_mask[sl.b * p.mask_stride_b + j] != 0;
    if (!sl.on[j]) continue;
    if (sl.first_key == N) sl.first_key = j;
    if (p.key_log_scale) sl.ell[j] = double(p.key_log_scale[bh * N + j]);
    sl.ck = std::max(sl.ck, sl.trend->s * double(j) + sl.ell[j]);
  }
  if (sl.ck != kNegInf)
    for (int64_t j = 0; j < N; ++j)
      if (sl.on[j]) sl.kappa[j] = static_cast<T>(std::exp(sl.trend->s * double(j) + sl.ell[j] - sl.ck));
  return sl;
}

// Keys that take part for row i: [j0, j1).
inline void key_range(int64_t i, int64_t N, bool causal, int64_t* j0, int64_t* j1) {
  *j0 = 0;
  *j1 = causal ? i + 1 : N;
}

// The row's own shift for the direct path: max over its keys of b[j - i] + l_j (-inf: none).
template <class T>
double row_shift(const Slice<T>& sl, int64_t i, bool causal) {
  int64_t j0, j1;
  key_range(i, sl.N, causal, &j0, &j1);
  double M = kNegInf;
  for (int64_t j = j0; j < j1; ++j)
    if (sl.on[j]) M = std::max(M, double(sl.bias[j - i + sl.N - 1]) + sl.ell[j]);
  return M;
}

// eps e^{mu_i} in a row's scale e^{log_scale} (inf when that overflows: the output is then 0,
// the true one being below eps^-1 e^{log_scale - mu_i} |num|, negligible).
double eps_scaled(const double eps, const double* mu_row, double log_scale) {
  if (eps == 0) return 0;
  return eps * std::exp(*mu_row - log_scale);
}

// buf[j][l] = K_j[m0 + l] kappa_j vt_j for keys that take part, exact zeros otherwise (a
// masked key's values are never read).
template <class T, int W>
void load_keys(const KernelizedRpeParams<T>& p, const Slice<T>& sl, const Chunk& c, T* buf) {
  const int64_t Dv = p.v.D;
  for (int64_t j = 0; j < sl.N; ++j) {
    T* dst = buf + j * 2 * W;
    if (!sl.on[j]) {
      std::fill(dst, dst + 2 * W, T(0));
      continue;
    }
    const T s = sl.kappa[j] * (c.d < Dv ? p.v.row(sl.b, sl.h, j)[c.d] : T(1));
    const T* f = p.phi_k.row(sl.b, sl.h, j) + c.m0;
    for (int l = 0; l < 2 * W; ++l) dst[l] = l < c.nl ? f[l] * s : T(0);
  }
}


template <class T>
std::vector<Trend<T>> fit_trends(const KernelizedRpeParams<T>& p) {
  const int64_t H = p.phi_q.H, N = p.phi_q.N;
  std::vector<Trend<T>> trends(p.bias_stride_h == 0 ? 1 : H);
  for (size_t h = 0; h < trends.size(); ++h)
    trends[h] = fit_trend(p.rel_bias + int64_t(h) * p.bias_stride_h, N, p.causal);
  return trends;
}

template <class T>
std::vector<T> spectra(const std::vector<Trend<T>>& trends, const fft::Plan<T>& plan, int64_t N, bool causal) {
  const int64_t L = plan.n, R = 2 * N - 1;
  std::vector<T> w(trends.size() * R), z(trends.size() * 2 * L);
  for (size_t h = 0; h < trends.size(); ++h) std::copy(trends[h].w.begin(), trends[h].w.end(), w.begin() + h * R);
  kernel_spectra(plan, w.data(), R, int64_t(trends.size()), N, causal, T(1) / T(L), z.data());
  return z;
}

}  // namespace

namespace {

template <class T>
void forward_impl(const KernelizedRpeParams<T>& p, BHND<T> out, KernelizedRpeRows<T> rows) {
  constexpr int W = fft::kLanes<T>;
  const int64_t B = p.phi_q.B, H = p.phi_q.H, N = p.phi_q.N, m = p.phi_q.D, Dv = p.v.D;
  if (B * H * N == 0) return;
  const int64_t L = fft::fast_length(2 * N - 1);
  auto plan = fft::plan<T>(L);
  const auto trends = fit_trends(p);
  const std::vector<T> z = spectra(trends, *plan, N, p.causal);
  const auto chunks = make_chunks(m, Dv, 2 * W);
  const int nt = resolve_threads(p.threads);
  std::vector<AlignedBuffer<T>> bufs(nt), accs(nt);
  parallel_for(B * H, nt, [&](int64_t bh) {
    const Slice<T> sl = make_slice(p, trends, bh);
    const int64_t b = sl.b, h = sl.h, zh = p.bias_stride_h == 0 ? 0 : h;
    auto& buf = bufs[thread_index()];
    auto& nd = accs[thread_index()];  // [N][Dv + 1] numerators and denominator
    buf.resize(L * 2 * W);
    nd.resize(N * (Dv + 1));
    std::fill(nd.data(), nd.data() + N * (Dv + 1), T(0));
    const bool any = sl.ck != kNegInf && sl.trend->cw != kNegInf;
    // Causal: the FFT mixes every key into every row, so a NaN or inf in a later key or value
    // would reach earlier rows (0 * inf = NaN). Such a (b, h) takes the direct path for every
    // row, which reads only the row's own keys j <= i (rare: the inputs hold non-finite values);
    // its backward is then direct too (no FFT row).
    bool all_direct = false;
    for (int64_t j = 0; p.causal && !all_direct && j < N; ++j) {
      if (!sl.on[j]) continue;
      const T* kf = p.phi_k.row(b, h, j);
      const T* vj = p.v.row(b, h, j);
      for (int64_t mm = 0; mm < m && !all_direct; ++mm) all_direct = !std::isfinite(kf[mm]);
      for (int64_t d = 0; d < Dv && !all_direct; ++d) all_direct = !std::isfinite(vj[d]);
    }
    for (size_t ci = 0; any && !all_direct && ci < chunks.size(); ++ci) {
      const Chunk& c = chunks[ci];
      load_keys<T, W>(p, sl, c, buf.data());
      fft::forward_padded<T, W>(*plan, buf.data(), N);
      fft::inverse_product<T, W>(*plan, buf.data(), z.data() + zh * 2 * L, false, N);
      for (int64_t i = 0; i < N; ++i) {
        const T* a = p.phi_q.row(b, h, i) + c.m0;
        const T* u = buf.data() + i * 2 * W;
        T s = 0;
#pragma omp simd reduction(+ : s)
        for (int64_t l = 0; l < c.nl; ++l) s += a[l] * u[l];
        nd.data()[i * (Dv + 1) + c.d] += s;
      }
    }
    // The FFT's per-entry rounding (without the row factor |a_i|_1), see the header: the
    // probabilistic estimate eps sqrt(log2 L) |w'|_2 |x|_2 of an FFT convolution's error.
    double w2 = 0, k2 = 0;
    for (T x : sl.trend->w) w2 += double(x) * x;
    for (int64_t mm = 0; mm < m; ++mm) {
      double s = 0;
      for (int64_t j = 0; j < N; ++j)
        if (sl.on[j]) {
          const double x = double(p.phi_k.row(b, h, j)[mm]) * sl.kappa[j];
          s += x * x;
        }
      k2 = std::max(k2, s);
    }
    const double noise = std::numeric_limits<T>::epsilon() * std::sqrt(std::log2(double(L)) * w2 * k2);
    std::vector<double> num(Dv);
    for (int64_t i = 0; i < N; ++i) {
      const T* r = nd.data() + i * (Dv + 1);
      T* o = out.row(b, h, i);
      T& dn = rows.den[bh * N + i];
      uint8_t& direct = rows.direct[bh * N + i];
      const double mu_i = p.eps_log_scale ? double(p.eps_log_scale[bh * N + i]) : 0.0;
      direct = 0;
      if (sl.row_empty(i, p.causal)) {
        dn = T(0);
        std::fill(o, o + Dv, T(0));
        continue;
      }
      const T* a = p.phi_q.row(b, h, i);
      double a1 = 0;
      for (int64_t mm = 0; mm < m; ++mm) a1 += std::abs(double(a[mm]));
      const T e = static_cast<T>(eps_scaled(p.eps, &mu_i, sl.G(i)));
      // A denominator below T's normal range goes to the direct path too: its reciprocal would
      // overflow to inf (and it has lost its relative precision anyway).
      if (!all_direct && r[Dv] >= std::numeric_limits<T>::min() && noise * a1 <= kTau<T> * (double(r[Dv]) + double(e))) {
        dn = r[Dv] + e;
        const T inv = std::isfinite(dn) ? T(1) / dn : T(0);
        for (int64_t d = 0; d < Dv; ++d) o[d] = r[d] * inv;
        continue;
      }
      // Direct, in double, with the row's own shift.
      direct = 1;
      const double M = row_shift(sl, i, p.causal);
      double den = 0;
      std::fill(num.begin(), num.end(), 0.0);
      if (M != kNegInf) {
        for (int64_t j = 0; j <= (p.causal ? i : N - 1); ++j) {
          if (!sl.on[j]) continue;
          const double om = std::exp(double(sl.bias[j - i + N - 1]) + sl.ell[j] - M);
          const T* kf = p.phi_k.row(b, h, j);
          double pj = 0;
          for (int64_t mm = 0; mm < m; ++mm) pj += double(a[mm]) * kf[mm];
          pj *= om;
          den += pj;
          const T* vj = p.v.row(b, h, j);
          for (int64_t d = 0; d < Dv; ++d) num[d] += pj * vj[d];
        }
      }
      const double D = den + (M != kNegInf ? eps_scaled(p.eps, &mu_i, M) : 0.0);
      dn = static_cast<T>(D);
      const double inv = D > 0 && std::isfinite(D) ? 1.0 / D : 0.0;
      for (int64_t d = 0; d < Dv; ++d) o[d] = static_cast<T>(num[d] * inv);
    }
  });
}

template <class T>
void backward_impl(const KernelizedRpeParams<T>& p, const KernelizedRpeGrads<T>& g) {
  constexpr int W = fft::kLanes<T>;
  const int64_t B = p.phi_q.B, H = p.phi_q.H, N = p.phi_q.N, m = p.phi_q.D, Dv = p.v.D;
  const int64_t R = 2 * N - 1;
  const int64_t outs = p.bias_stride_h == 0 ? 1 : H;
  if (B * H * N == 0) {
    if (g.grad_rel_bias && N > 0) std::fill(g.grad_rel_bias, g.grad_rel_bias + outs * R, T(0));
    return;
  }
  const int64_t L = fft::fast_length(2 * N - 1);
  auto plan = fft::plan<T>(L);
  const auto trends = fit_trends(p);
  const std::vector<T> z = spectra(trends, *plan, N, p.causal);
  const auto chunks = make_chunks(m, Dv, 2 * W);
  const int nt = resolve_threads(p.threads);
  const bool want_b = g.grad_rel_bias != nullptr;
  std::vector<T> cross(want_b ? B * H * 2 * L : 0, T(0));  // per (b, h): summed in order later
  std::vector<double> direct_gb(want_b ? B * H * R : 0, 0.0);  // direct rows' grad b per (b, h)
  std::vector<AlignedBuffer<T>> abufs(nt), ebufs(nt), ghs(nt);
  parallel_for(B * H, nt, [&](int64_t bh) {
    const Slice<T> sl = make_slice(p, trends, bh);
    const int64_t b = sl.b, h = sl.h, zh = p.bias_stride_h == 0 ? 0 : h;
    const int t = thread_index();
    abufs[t].resize(L * 2 * W);
    ebufs[t].resize(L * 2 * W);
    ghs[t].resize(N * (Dv + 1));
    T *ab = abufs[t].data(), *eb = ebufs[t].data(), *gh = ghs[t].data();
    bool any_fft = false;
    for (int64_t i = 0; i < N; ++i) {
      const T* gz = g.grad_out.row(b, h, i);
      const T* zi = g.out.row(b, h, i);
      T* r = gh + i * (Dv + 1);
      const T D = g.den[bh * N + i];
      const bool live = D > T(0) && std::isfinite(D);
      const T inv = live ? T(1) / D : T(0);
      T dot = 0;
      for (int64_t d = 0; d < Dv; ++d) r[d] = gz[d] * inv, dot += gz[d] * zi[d];
      r[Dv] = -dot * inv;
      if (g.grad_eps_log_scale) {
        // d z_i / d mu_i = -z_i eps_i / D_i, with eps_i in the row's own scale.
        T gm = 0;
        if (live && p.eps > 0 && !g.direct[bh * N + i]) {  // direct rows: below
          const double mu_i = p.eps_log_scale ? double(p.eps_log_scale[bh * N + i]) : 0.0;
          gm = static_cast<T>(-double(dot) * eps_scaled(p.eps, &mu_i, sl.G(i)) / double(D));
        }
        g.grad_eps_log_scale[bh * N + i] = gm;
      }
      std::fill(g.grad_phi_q.row(b, h, i), g.grad_phi_q.row(b, h, i) + m, T(0));
      std::fill(g.grad_phi_k.row(b, h, i), g.grad_phi_k.row(b, h, i) + m, T(0));
      std::fill(g.grad_v.row(b, h, i), g.grad_v.row(b, h, i) + Dv, T(0));
    }
    // FFT rows: the Toeplitz products (direct and empty rows have gh = 0 there).
    std::vector<T> ghf(N * (Dv + 1));
    for (int64_t i = 0; i < N; ++i)
      for (int64_t d = 0; d <= Dv; ++d) {
        const bool fft_row = !g.direct[bh * N + i];
        ghf[i * (Dv + 1) + d] = fft_row ? gh[i * (Dv + 1) + d] : T(0);
        any_fft = any_fft || (fft_row && gh[i * (Dv + 1) + d] != T(0));
      }
    for (size_t ci = 0; any_fft && ci < chunks.size(); ++ci) {
      const Chunk& c = chunks[ci];
      load_keys<T, W>(p, sl, c, ab);
      for (int64_t i = 0; i < N; ++i) {
        const T* a = p.phi_q.row(b, h, i) + c.m0;
        const T s = ghf[i * (Dv + 1) + c.d];
        T* dst = eb + i * 2 * W;
        for (int l = 0; l < 2 * W; ++l) dst[l] = l < c.nl && s != T(0) ? a[l] * s : T(0);
      }
      fft::forward_padded<T, W>(*plan, ab, N);
      fft::forward_padded<T, W>(*plan, eb, N);
      if (want_b) accumulate_cross<T, W>(eb, ab, L, cross.data() + bh * 2 * L);
      fft::inverse_product<T, W>(*plan, ab, z.data() + zh * 2 * L, false, N);  // U = T' A
      fft::inverse_product<T, W>(*plan, eb, z.data() + zh * 2 * L, true, N);   // F = T'^T E
      for (int64_t i = 0; i < N; ++i) {
        const T ghd = ghf[i * (Dv + 1) + c.d];
        if (ghd == T(0)) continue;
        const T* u = ab + i * 2 * W;
        T* ga = g.grad_phi_q.row(b, h, i) + c.m0;
#pragma omp simd
        for (int64_t l = 0; l < c.nl; ++l) ga[l] += ghd * u[l];
      }
      for (int64_t j = 0; j < N; ++j) {
        if (!sl.on[j]) continue;  // masked keys: zero gradients
        const T s = sl.kappa[j] * (c.d < Dv ? p.v.row(b, h, j)[c.d] : T(1));
        const T* f = eb + j * 2 * W;
        const T* kf = p.phi_k.row(b, h, j) + c.m0;
        T* gk = g.grad_phi_k.row(b, h, j) + c.m0;
        T dv = 0;
#pragma omp simd reduction(+ : dv)
        for (int64_t l = 0; l < c.nl; ++l) {
          gk[l] += f[l] * s;
          dv += f[l] * kf[l];
        }
        if (c.d < Dv) g.grad_v.row(b, h, j)[c.d] += dv * sl.kappa[j];
      }
    }
    // Direct rows, term by term in double, with the forward's shift. Their denominator is
    // recomputed in double too: rounded to T it can underflow (relu rows with tiny features).
    std::vector<double> ga(m), ghd(Dv + 1);
    for (int64_t i = 0; i < N; ++i) {
      if (!g.direct[bh * N + i]) continue;
      const double M = row_shift(sl, i, p.causal);
      if (M == kNegInf) continue;
      const T* a = p.phi_q.row(b, h, i);
      const int64_t jend = p.causal ? i + 1 : N;
      auto weight = [&](int64_t j, double* pj) {  // omega_ij and p_ij = a_i . K_j
        const T* kf = p.phi_k.row(b, h, j);
        double s = 0;
        for (int64_t mm = 0; mm < m; ++mm) s += double(a[mm]) * kf[mm];
        *pj = s;
        return std::exp(double(sl.bias[j - i + N - 1]) + sl.ell[j] - M);
      };
      const double mu_i = p.eps_log_scale ? double(p.eps_log_scale[bh * N + i]) : 0.0;
      const double e = eps_scaled(p.eps, &mu_i, M);
      double D = e;
      for (int64_t j = 0; j < jend; ++j) {
        if (!sl.on[j]) continue;
        double pj;
        const double om = weight(j, &pj);
        D += om * pj;
      }
      if (!(D > 0) || !std::isfinite(D)) continue;
      const T* gz = g.grad_out.row(b, h, i);
      const T* zi = g.out.row(b, h, i);
      double dot = 0;
      for (int64_t d = 0; d < Dv; ++d) ghd[d] = double(gz[d]) / D, dot += double(gz[d]) * zi[d];
      ghd[Dv] = -dot / D;
      if (g.grad_eps_log_scale) g.grad_eps_log_scale[bh * N + i] = static_cast<T>(-dot * e / D);
      std::fill(ga.begin(), ga.end(), 0.0);
      for (int64_t j = 0; j < jend; ++j) {
        if (!sl.on[j]) continue;
        double pj;
        const double om = weight(j, &pj);
        if (om == 0) continue;
        const T* kf = p.phi_k.row(b, h, j);
        const T* vj = p.v.row(b, h, j);
        double qj = ghd[Dv];
        for (int64_t d = 0; d < Dv; ++d) qj += ghd[d] * vj[d];
        T* gk = g.grad_phi_k.row(b, h, j);
        T* gv = g.grad_v.row(b, h, j);
        for (int64_t mm = 0; mm < m; ++mm) {
          ga[mm] += om * qj * kf[mm];
          gk[mm] += static_cast<T>(om * qj * a[mm]);
        }
        for (int64_t d = 0; d < Dv; ++d) gv[d] += static_cast<T>(om * pj * ghd[d]);
        if (want_b) direct_gb[bh * R + j - i + N - 1] += om * pj * qj;
      }
      T* gq = g.grad_phi_q.row(b, h, i);
      for (int64_t mm = 0; mm < m; ++mm) gq[mm] += static_cast<T>(ga[mm]);
    }
    if (g.grad_key_log_scale)
      for (int64_t j = 0; j < N; ++j) {
        // The keys enter as K_j e^{l_j}: d/dl_j = K_j . grad K_j.
        T s = 0;
        if (sl.on[j]) {
          const T* kf = p.phi_k.row(b, h, j);
          const T* gk = g.grad_phi_k.row(b, h, j);
          for (int64_t mm = 0; mm < m; ++mm) s += kf[mm] * gk[mm];
        }
        g.grad_key_log_scale[bh * N + j] = s;
      }
  });
  if (!want_b) return;
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
  coeff_grads_from_cross(*plan, sum.data(), outs, N, p.causal, g.grad_rel_bias);
  for (int64_t o = 0; o < outs; ++o) {
    const std::vector<T>& w = trends[o].w;
    T* gb = g.grad_rel_bias + o * R;
    for (int64_t t = 0; t < R; ++t) {
      double s = 0;
      for (int64_t b = 0; b < B; ++b)
        for (int64_t h = 0; h < H; ++h)
          if (outs == 1 || h == o) s += direct_gb[(b * H + h) * R + t];
      // w' = 0 (an offset far below the rest, or -inf) contributes nothing through the FFT.
      gb[t] = (w[t] == T(0) ? T(0) : gb[t] * w[t]) + static_cast<T>(s);
    }
  }
}

// float32 inputs run the double computation. Why: the FFT's rounding is relative to the largest
// term of a head's product, and the exponential feature maps give keys that span e^10 and more
// (FAVOR+ with D = 64 does): in float almost every row then fails the a-posteriori check and
// falls to the O(N) direct sum (measured: all 32768 rows of B=1, H=8, N=4096, 18 s for a forward
// that takes 1.3 s in double, where no row needs it). The copies cost O(B H N (m + Dv)) time and
// memory, a small part of the FFTs' O(B H N (m Dv) log N) work.
std::vector<double> to_double(BHND<const float> x) {
  std::vector<double> out(size_t(x.B * x.H * x.N * x.D));
  for (int64_t b = 0; b < x.B; ++b)
    for (int64_t h = 0; h < x.H; ++h)
      for (int64_t n = 0; n < x.N; ++n) {
        const float* r = x.row(b, h, n);
        std::copy(r, r + x.D, out.data() + ((b * x.H + h) * x.N + n) * x.D);
      }
  return out;
}

std::vector<double> to_double(const float* x, int64_t n) {
  return x ? std::vector<double>(x, x + n) : std::vector<double>();
}

BHND<const double> view_of(const std::vector<double>& buf, BHND<const float> like) {
  return BHND<const double>::contiguous(buf.data(), like.B, like.H, like.N, like.D);
}

void store(const std::vector<double>& src, BHND<float> dst) {
  for (int64_t b = 0; b < dst.B; ++b)
    for (int64_t h = 0; h < dst.H; ++h)
      for (int64_t n = 0; n < dst.N; ++n) {
        const double* r = src.data() + ((b * dst.H + h) * dst.N + n) * dst.D;
        std::transform(r, r + dst.D, dst.row(b, h, n), [](double v) { return static_cast<float>(v); });
      }
}

void store(const std::vector<double>& src, float* dst) {
  if (dst) std::transform(src.begin(), src.end(), dst, [](double v) { return static_cast<float>(v); });
}

// The float parameters as double copies (and the params that point at them).
struct Promoted {
  std::vector<double> phi_q, phi_k, v, bias, key_log_scale, eps_log_scale;
  KernelizedRpeParams<double> p;
  explicit Promoted(const KernelizedRpeParams<float>& f) {
    const int64_t B = f.phi_q.B, H = f.phi_q.H, N = f.phi_q.N, R = N > 0 ? 2 * N - 1 : 0;
    phi_q = to_double(f.phi_q), phi_k = to_double(f.phi_k), v = to_double(f.v);
    const int64_t bias_rows = f.bias_stride_h == 0 ? 1 : H;
    bias.resize(size_t(bias_rows * R));
    for (int64_t h = 0; h < bias_rows; ++h)
      std::copy(f.rel_bias + h * f.bias_stride_h, f.rel_bias + h * f.bias_stride_h + R, bias.data() + h * R);
    key_log_scale = to_double(f.key_log_scale, B * H * N);
    eps_log_scale = to_double(f.eps_log_scale, B * H * N);
    p.phi_q = view_of(phi_q, f.phi_q), p.phi_k = view_of(phi_k, f.phi_k), p.v = view_of(v, f.v);
    p.rel_bias = bias.data();
    p.bias_stride_h = f.bias_stride_h == 0 ? 0 : R;
    p.key_log_scale = f.key_log_scale ? key_log_scale.data() : nullptr;
    p.eps_log_scale = f.eps_log_scale ? eps_log_scale.data() : nullptr;
    p.key_padding_mask = f.key_padding_mask, p.mask_stride_b = f.mask_stride_b;
    p.causal = f.causal, p.eps = f.eps, p.threads = f.threads;
  }
};

}  // namespace

template <class T>
void kernelized_rpe_forward(const KernelizedRpeParams<T>& p, BHND<T> out, KernelizedRpeRows<T> rows) {
  if constexpr (std::is_same_v<T, float>) {
    const Promoted d(p);
    const int64_t BHN = p.phi_q.B * p.phi_q.H * p.phi_q.N;
    std::vector<double> out64(static_cast<size_t>(BHN * p.v.D)), den64(static_cast<size_t>(BHN));
    forward_impl<double>(d.p, BHND<double>::contiguous(out64.data(), p.v.B, p.v.H, p.v.N, p.v.D),
                         {den64.data(), rows.direct});
    store(out64, out);
    store(den64, rows.den);
  } else {
    forward_impl<T>(p, out, rows);
  }
}

template <class T>
void kernelized_rpe_backward(const KernelizedRpeParams<T>& p, const KernelizedRpeGrads<T>& g) {
  if constexpr (std::is_same_v<T, float>) {
    const Promoted d(p);
    const int64_t B = p.phi_q.B, H = p.phi_q.H, N = p.phi_q.N, BHN = B * H * N;
    const int64_t R = N > 0 ? 2 * N - 1 : 0, outs = p.bias_stride_h == 0 ? 1 : H;
    const std::vector<double> out = to_double(g.out), grad_out = to_double(g.grad_out);
    const std::vector<double> den = to_double(g.den, BHN);
    std::vector<double> gq(d.phi_q.size()), gk(d.phi_k.size()), gv(d.v.size());
    std::vector<double> gb(g.grad_rel_bias ? outs * R : 0), gl(g.grad_key_log_scale ? BHN : 0),
        gm(g.grad_eps_log_scale ? BHN : 0);
    KernelizedRpeGrads<double> g64;
    g64.out = view_of(out, g.out), g64.den = den.data(), g64.direct = g.direct;
    g64.grad_out = view_of(grad_out, g.grad_out);
    g64.grad_phi_q = BHND<double>::contiguous(gq.data(), B, H, N, p.phi_q.D);
    g64.grad_phi_k = BHND<double>::contiguous(gk.data(), B, H, N, p.phi_k.D);
    g64.grad_v = BHND<double>::contiguous(gv.data(), B, H, N, p.v.D);
    g64.grad_rel_bias = g.grad_rel_bias ? gb.data() : nullptr;
    g64.grad_key_log_scale = g.grad_key_log_scale ? gl.data() : nullptr;
    g64.grad_eps_log_scale = g.grad_eps_log_scale ? gm.data() : nullptr;
    backward_impl<double>(d.p, g64);
    store(gq, g.grad_phi_q), store(gk, g.grad_phi_k), store(gv, g.grad_v);
    store(gb, g.grad_rel_bias), store(gl, g.grad_key_log_scale), store(gm, g.grad_eps_log_scale);
  } else {
    backward_impl<T>(p, g);
  }
}

#define LONGATTN_KRPE_INSTANTIATE(T)                                                                       \
  template void kernelized_rpe_forward<T>(const KernelizedRpeParams<T>&, BHND<T>, KernelizedRpeRows<T>); \
  template void kernelized_rpe_backward<T>(const KernelizedRpeParams<T>&, const KernelizedRpeGrads<T>&);
LONGATTN_KRPE_INSTANTIATE(float)
LONGATTN_KRPE_INSTANTIATE(double)
#undef LONGATTN_KRPE_INSTANTIATE

LONGATTN_ISA_END
}  // namespace longattn::kernels
