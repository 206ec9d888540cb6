// The direct path of the Toeplitz product, O(N^2 C), faster than the FFT for short sequences.
// Blocks of RB output rows accumulate sum_s coef(r, s) in_s in registers, vectorised over the
// channels; the coefficient gradient is a dot product per offset. Work items are (batch, head).
//
// No BLAS here on purpose: the serial OpenBLAS 0.3.21 of Debian is not safe to call from two
// threads at once (its buffer pool is unlocked; concurrent sgemm calls return wrong results).
#include <algorithm>
#include <vector>

#include "kernels/common/parallel.h"
#include "kernels/fft/fft.h"
#include "kernels/toeplitz/toeplitz_paths.h"

namespace longattn::kernels {
LONGATTN_ISA_BEGIN
namespace toeplitz_detail {

namespace {

constexpr int RB = 4;  // output rows per register block

// out_r = sum_s c[N - 1 + (s - r)] in_s for r in [0, N), where pairs with (s - r) of the
// excluded sign are skipped: causal_lower keeps s <= r, causal_upper keeps s >= r.
// `cb` is scratch of N * RB coefficients. An excluded input row is never read, not even times a
// zero: 0 * inf is NaN, and a future value must not reach an earlier output. So the input rows
// that only some rows of a register block keep (the block's diagonal) are added row by row.
template <class T>
void banded_product(const T* c, int64_t N, int64_t C, const T* in, int64_t in_sn, T* out,
                    int64_t out_sn, bool causal_lower, bool causal_upper, T* cb) {
  constexpr int CT = 2 * fft::kLanes<T>;  // channel tile: two vectors per row
  for (int64_t r0 = 0; r0 < N; r0 += RB) {
    const int rb = static_cast<int>(std::min<int64_t>(RB, N - r0));
    const bool banded = causal_lower || causal_upper;
    // [slo, shi): input rows every row of the block keeps; [r0, r0 + rb) is the diagonal when banded.
    const int64_t slo = causal_upper ? r0 + rb : 0;
    const int64_t shi = causal_lower ? r0 : N;
    // cb[s][r] = coefficient of input row s for output row r0 + r (0 for rows past the end).
    for (int64_t s = slo; s < shi; ++s)
      for (int r = 0; r < RB; ++r) cb[(s - slo) * RB + r] = r < rb ? c[N - 1 + s - (r0 + r)] : T(0);
    for (int64_t k0 = 0; k0 < C; k0 += CT) {
      const int64_t ct = std::min<int64_t>(CT, C - k0);
      T acc[RB][CT] = {};
      if (ct == CT) {
        for (int64_t s = slo; s < shi; ++s) {
          const T* xs = in + s * in_sn + k0;
          const T* cs = cb + (s - slo) * RB;
          for (int r = 0; r < RB; ++r) {
            const T a = cs[r];
#pragma omp simd
            for (int k = 0; k < CT; ++k) acc[r][k] += a * xs[k];
          }
        }
      } else {
        for (int64_t s = slo; s < shi; ++s) {
          const T* xs = in + s * in_sn + k0;
          const T* cs = cb + (s - slo) * RB;
          for (int r = 0; r < RB; ++r)
            for (int64_t k = 0; k < ct; ++k) acc[r][k] += cs[r] * xs[k];
        }
      }
      if (banded)
        for (int r = 0; r < rb; ++r) {
          const int64_t row = r0 + r;
          const int64_t lo = causal_lower ? r0 : row, hi = causal_lower ? row + 1 : r0 + rb;
          for (int64_t s = lo; s < hi; ++s) {
            const T a = c[N - 1 + s - row];
            const T* xs = in + s * in_sn + k0;
            for (int64_t k = 0; k < ct; ++k) acc[r][k] += a * xs[k];
          }
        }
      for (int r = 0; r < rb; ++r) std::copy(acc[r], acc[r] + ct, out + (r0 + r) * out_sn + k0);
    }
  }
}

}  // namespace

template <class T>
void direct_forward(const ToeplitzParams<T>& p, BHND<T> y) {
  const int64_t B = p.x.B, H = p.x.H, N = p.x.N, C = p.x.D;
  const int nt = resolve_threads(p.threads);
  std::vector<AlignedBuffer<T>> scratch(nt);
  parallel_for(B * H, nt, [&](int64_t bh) {
    const int64_t b = bh / H, h = bh % H;
    auto& cb = scratch[thread_index()];
    cb.resize(N * RB);
    banded_product(p.coeffs + h * p.coeffs_stride_h, N, C, p.x.row(b, h, 0), p.x.sn,
                   y.row(b, h, 0), y.sn, p.causal, false, cb.data());
  });
}

template <class T>
void direct_backward(const ToeplitzParams<T>& p, const ToeplitzGrads<T>& g) {
  const int64_t B = p.x.B, H = p.x.H, N = p.x.N, C = p.x.D;
  const int nt = resolve_threads(p.threads);
  const bool want_x = g.grad_x.data != nullptr, want_c = g.grad_coeffs != nullptr;
  const int64_t R = 2 * N - 1;
  // Per (b, h) coefficient gradients in double, summed over b (and heads when shared) in order.
  std::vector<double> acc(want_c ? B * H * R : 0, 0.0);
  std::vector<AlignedBuffer<T>> scratch(nt);
  parallel_for(B * H, nt, [&](int64_t bh) {
    const int64_t b = bh / H, h = bh % H;
    const T* c = p.coeffs + h * p.coeffs_stride_h;
    auto& buf = scratch[thread_index()];
    buf.resize(N * RB + R);
    if (want_x) {
      // grad_x_j = sum_i c[N - 1 + j - i] g_i = sum_i crev[N - 1 + (i - j)] g_i, causal: i >= j.
      T* crev = buf.data() + N * RB;
      for (int64_t k = 0; k < R; ++k) crev[k] = c[R - 1 - k];
      banded_product(crev, N, C, g.grad_y.row(b, h, 0), g.grad_y.sn, g.grad_x.row(b, h, 0),
                     g.grad_x.sn, false, p.causal, buf.data());
    }
    if (want_c) {
      // grad_c[N - 1 + r] = sum_i g_i . x_{i + r}; causal: r <= 0 only.
      double* a = acc.data() + bh * R;
      const int64_t rmax = p.causal ? 0 : N - 1;
      for (int64_t r = -(N - 1); r <= rmax; ++r) {
        double s = 0;
        for (int64_t i = std::max<int64_t>(0, -r); i < std::min<int64_t>(N, N - r); ++i) {
          const T* gi = g.grad_y.row(b, h, i);
          const T* xj = p.x.row(b, h, i + r);
          T d = 0;
#pragma omp simd reduction(+ : d)
          for (int64_t k = 0; k < C; ++k) d += gi[k] * xj[k];
          s += d;
        }
        a[N - 1 + r] = s;
      }
    }
  });
  if (!want_c) return;
  const int64_t outs = p.coeffs_stride_h == 0 ? 1 : H;
  for (int64_t o = 0; o < outs; ++o) {
    T* out = g.grad_coeffs + o * R;
    for (int64_t r = 0; r < R; ++r) {
      double s = 0;
      for (int64_t b = 0; b < B; ++b)
        for (int64_t h = 0; h < H; ++h)
          if (outs == 1 || h == o) s += acc[(b * H + h) * R + r];
      out[r] = static_cast<T>(s);
    }
  }
}

template void direct_forward<float>(const ToeplitzParams<float>&, BHND<float>);
template void direct_forward<double>(const ToeplitzParams<double>&, BHND<double>);
template void direct_backward<float>(const ToeplitzParams<float>&, const ToeplitzGrads<float>&);
template void direct_backward<double>(const ToeplitzParams<double>&, const ToeplitzGrads<double>&);

}  // namespace toeplitz_detail
LONGATTN_ISA_END
}  // namespace longattn::kernels
