// Entry points: path choice for 1-D, and 2-D by 1-D products on row and column sums.
//
// With `causal`, an output never depends on a later row, whatever its value: the direct path
// never reads excluded rows (not even times zero: 0 * inf is NaN), and the FFT path, which mixes
// all rows, redoes on the direct path any (batch, head) holding an inf or NaN.
#include "kernels/toeplitz/toeplitz.h"

#include <cmath>
#include <vector>

#include "kernels/common/parallel.h"
#include "kernels/toeplitz/toeplitz_paths.h"

namespace longattn::kernels {
LONGATTN_ISA_BEGIN

ToeplitzPath toeplitz_choose_path(int64_t N, int64_t C, bool causal) {
  // Cost model per channel: direct ~ N^2 multiply-adds (half when causal) at near-peak vector
  // speed; FFT ~ a few L log2 L per channel pair with L = next power of two >= 2N - 1.
  // Measured (forward + backward, C = 64, one thread, AVX-512): the paths tie near N = 8 and the
  // FFT is 3x faster at N = 32, so the direct path only serves very short sequences.
  (void)C;  // both costs scale linearly in C
  const double L = static_cast<double>(2 * std::max<int64_t>(N, 1));
  const double direct = double(N) * double(N) * (causal ? 0.5 : 1.0);
  const double fft = 2.0 * double(N) * std::log2(L);
  return direct <= fft ? ToeplitzPath::Direct : ToeplitzPath::Fft;
}

namespace {
template <class T>
bool use_fft(const ToeplitzParams<T>& p) {
  if (p.path != ToeplitzPath::Auto) return p.path == ToeplitzPath::Fft;
  return toeplitz_choose_path(p.x.N, p.x.D, p.causal) == ToeplitzPath::Fft;
}

template <class T>
bool slice_is_finite(const BHND<const T>& x, int64_t b, int64_t h) {
  for (int64_t n = 0; n < x.N; ++n) {
    const T* r = x.row(b, h, n);
    for (int64_t k = 0; k < x.D; ++k)
      if (!std::isfinite(r[k])) return false;
  }
  return true;
}
}  // namespace

template <class T>
void toeplitz_forward(const ToeplitzParams<T>& p, BHND<T> y) {
  if (p.x.B * p.x.H * p.x.N * p.x.D == 0) return;
  if (!use_fft(p)) return toeplitz_detail::direct_forward(p, y);
  toeplitz_detail::fft_forward(p, y);
  if (!p.causal) return;
  // The FFT mixes every input row into every output row, so one inf or NaN would reach the
  // earlier outputs of its (batch, head) too. Causal outputs must not depend on later rows
  // whatever their values: such slices are redone on the direct path, which never reads them.
  const int64_t B = p.x.B, H = p.x.H;
  std::vector<uint8_t> finite(B * H);
  parallel_for(B * H, p.threads, [&](int64_t bh) { finite[bh] = slice_is_finite(p.x, bh / H, bh % H); });
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      if (finite[b * H + h]) continue;
      ToeplitzParams<T> one = p;
      one.x = BHND<const T>{p.x.row(b, h, 0), 1, 1, p.x.N, p.x.D, 0, 0, p.x.sn};
      one.coeffs = p.coeffs + h * p.coeffs_stride_h;
      toeplitz_detail::direct_forward(one, BHND<T>{y.row(b, h, 0), 1, 1, y.N, y.D, 0, 0, y.sn});
    }
}

template <class T>
void toeplitz_backward(const ToeplitzParams<T>& p, const ToeplitzGrads<T>& g) {
  const int64_t B = p.x.B, H = p.x.H, N = p.x.N, C = p.x.D;
  if (B * H * N * C == 0) {  // nothing flows; the coefficient gradient is zero
    if (g.grad_coeffs && N > 0) {
      const int64_t outs = p.coeffs_stride_h == 0 ? 1 : H;
      std::fill(g.grad_coeffs, g.grad_coeffs + outs * (2 * N - 1), T(0));
    }
    return;
  }
  if (use_fft(p))
    toeplitz_detail::fft_backward(p, g);
  else
    toeplitz_detail::direct_backward(p, g);
}

// ----------------------------------------------------------------------------------------- 2-D

namespace {

// rows[b,h,a,:] = sum_b' x[b,h,(a,b'),:] and cols[b,h,b',:] = sum_a x[b,h,(a,b'),:].
template <class T>
void row_col_sums(BHND<const T> x, int64_t height, int64_t width, int threads, std::vector<T>& rows,
                  std::vector<T>& cols) {
  const int64_t B = x.B, H = x.H, C = x.D;
  rows.assign(B * H * height * C, T(0));
  cols.assign(B * H * width * C, T(0));
  parallel_for(B * H, threads, [&](int64_t bh) {
    T* r = rows.data() + bh * height * C;
    T* c = cols.data() + bh * width * C;
    for (int64_t a = 0; a < height; ++a)
      for (int64_t w = 0; w < width; ++w) {
        const T* src = x.row(bh / H, bh % H, a * width + w);
        T* ra = r + a * C;
        T* cw = c + w * C;
        for (int64_t k = 0; k < C; ++k) ra[k] += src[k], cw[k] += src[k];
      }
  });
}

// out[b,h,(a,w),:] = rows[b,h,a,:] + cols[b,h,w,:].
template <class T>
void broadcast_sum(const std::vector<T>& rows, const std::vector<T>& cols, int64_t height,
                   int64_t width, int threads, BHND<T> out) {
  const int64_t H = out.H, C = out.D;
  parallel_for(out.B * H, threads, [&](int64_t bh) {
    const T* r = rows.data() + bh * height * C;
    const T* c = cols.data() + bh * width * C;
    for (int64_t a = 0; a < height; ++a)
      for (int64_t w = 0; w < width; ++w) {
        T* dst = out.row(bh / H, bh % H, a * width + w);
        for (int64_t k = 0; k < C; ++k) dst[k] = r[a * C + k] + c[w * C + k];
      }
  });
}

template <class T>
ToeplitzParams<T> axis_params(const Toeplitz2dParams<T>& p, const std::vector<T>& sums,
                              int64_t len, bool rows) {
  ToeplitzParams<T> q;
  q.x = BHND<const T>::contiguous(sums.data(), p.x.B, p.x.H, len, p.x.D);
  q.coeffs = rows ? p.row_coeffs : p.col_coeffs;
  q.coeffs_stride_h = rows ? p.row_stride_h : p.col_stride_h;
  q.path = p.path;
  q.threads = p.threads;
  return q;
}

}  // namespace

template <class T>
void toeplitz2d_forward(const Toeplitz2dParams<T>& p, BHND<T> y) {
  const int64_t B = p.x.B, H = p.x.H, C = p.x.D, hh = p.height, ww = p.width;
  if (B * H * hh * ww * C == 0) return;
  std::vector<T> rows, cols;
  row_col_sums(p.x, hh, ww, p.threads, rows, cols);
  std::vector<T> yr(rows.size()), yc(cols.size());
  toeplitz_forward(axis_params(p, rows, hh, true), BHND<T>::contiguous(yr.data(), B, H, hh, C));
  toeplitz_forward(axis_params(p, cols, ww, false), BHND<T>::contiguous(yc.data(), B, H, ww, C));
  broadcast_sum(yr, yc, hh, ww, p.threads, y);
}

template <class T>
void toeplitz2d_backward(const Toeplitz2dParams<T>& p, const Toeplitz2dGrads<T>& g) {
  const int64_t B = p.x.B, H = p.x.H, C = p.x.D, hh = p.height, ww = p.width;
  std::vector<T> xr, xc, gr, gc;
  if (g.grad_row_coeffs || g.grad_col_coeffs) row_col_sums(p.x, hh, ww, p.threads, xr, xc);
  else xr.assign(B * H * hh * C, T(0)), xc.assign(B * H * ww * C, T(0));  // unused values
  row_col_sums(g.grad_y, hh, ww, p.threads, gr, gc);
  const bool want_x = g.grad_x.data != nullptr;
  std::vector<T> gxr(want_x ? gr.size() : 0), gxc(want_x ? gc.size() : 0);
  ToeplitzGrads<T> rg{BHND<const T>::contiguous(gr.data(), B, H, hh, C),
                      want_x ? BHND<T>::contiguous(gxr.data(), B, H, hh, C) : BHND<T>{},
                      g.grad_row_coeffs};
  ToeplitzGrads<T> cg{BHND<const T>::contiguous(gc.data(), B, H, ww, C),
                      want_x ? BHND<T>::contiguous(gxc.data(), B, H, ww, C) : BHND<T>{},
                      g.grad_col_coeffs};
  toeplitz_backward(axis_params(p, xr, hh, true), rg);
  toeplitz_backward(axis_params(p, xc, ww, false), cg);
  if (want_x && B * H * hh * ww * C > 0) broadcast_sum(gxr, gxc, hh, ww, p.threads, g.grad_x);
}

#define LONGATTN_TOEPLITZ_INSTANTIATE(T)                                                  \
  template void toeplitz_forward<T>(const ToeplitzParams<T>&, BHND<T>);                    \
  template void toeplitz_backward<T>(const ToeplitzParams<T>&, const ToeplitzGrads<T>&);   \
  template void toeplitz2d_forward<T>(const Toeplitz2dParams<T>&, BHND<T>);                \
  template void toeplitz2d_backward<T>(const Toeplitz2dParams<T>&, const Toeplitz2dGrads<T>&);
LONGATTN_TOEPLITZ_INSTANTIATE(float)
LONGATTN_TOEPLITZ_INSTANTIATE(double)
#undef LONGATTN_TOEPLITZ_INSTANTIATE

LONGATTN_ISA_END
}  // namespace longattn::kernels
