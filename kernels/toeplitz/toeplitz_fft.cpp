// The FFT path of the Toeplitz product: work items are (batch, head, chunk of 2W channels).
#include <vector>

#include "kernels/common/parallel.h"
#include "kernels/toeplitz/toeplitz_fft.h"
#include "kernels/toeplitz/toeplitz_paths.h"

namespace longattn::kernels {
LONGATTN_ISA_BEGIN
namespace toeplitz_detail {

namespace {

// Kernel spectra of every head, 1/L folded in: [H][2L].
template <class T>
std::vector<T> head_spectra(const ToeplitzParams<T>& p, const fft::Plan<T>& plan, int64_t H) {
  const int64_t L = plan.n;
  std::vector<T> z(H * 2 * L);
  kernel_spectra(plan, p.coeffs, p.coeffs_stride_h, H, p.x.N, p.causal, T(1) / T(L), z.data());
  return z;
}

}  // namespace

template <class T>
void fft_forward(const ToeplitzParams<T>& p, BHND<T> y) {
  constexpr int W = fft::kLanes<T>;
  const int64_t B = p.x.B, H = p.x.H, N = p.x.N, C = p.x.D;
  const int64_t L = fft::fast_length(2 * N - 1);
  auto plan = fft::plan<T>(L);
  const std::vector<T> z = head_spectra(p, *plan, H);
  const int64_t chunks = (C + 2 * W - 1) / (2 * W);
  const int nt = resolve_threads(p.threads);
  std::vector<AlignedBuffer<T>> scratch(nt);
  parallel_for(B * H * chunks, nt, [&](int64_t item) {
    const int64_t c0 = (item % chunks) * 2 * W, bh = item / chunks, b = bh / H, h = bh % H;
    auto& buf = scratch[thread_index()];
    buf.resize(L * 2 * W);
    load_chunk<T, W>(p.x.row(b, h, 0), p.x.sn, N, C, c0, L, buf.data());
    fft::forward_padded<T, W>(*plan, buf.data(), N);
    fft::inverse_product<T, W>(*plan, buf.data(), z.data() + h * 2 * L, false, N);
    store_chunk<T, W>(buf.data(), N, C, c0, y.row(b, h, 0), y.sn);
  });
}

template <class T>
void fft_backward(const ToeplitzParams<T>& p, const ToeplitzGrads<T>& g) {
  constexpr int W = fft::kLanes<T>;
  const int64_t B = p.x.B, H = p.x.H, N = p.x.N, C = p.x.D;
  const int64_t L = fft::fast_length(2 * N - 1);
  auto plan = fft::plan<T>(L);
  const bool want_x = g.grad_x.data != nullptr, want_c = g.grad_coeffs != nullptr;
  std::vector<T> z;
  if (want_x) z = head_spectra(p, *plan, H);
  const int64_t chunks = (C + 2 * W - 1) / (2 * W);
  const int64_t items = B * H * chunks;
  // One cross spectrum per item, summed afterwards in a fixed order: deterministic.
  std::vector<T> cross(want_c ? items * 2 * L : 0, T(0));
  const int nt = resolve_threads(p.threads);
  std::vector<AlignedBuffer<T>> gbufs(nt), xbufs(nt);
  parallel_for(items, nt, [&](int64_t item) {
    const int64_t c0 = (item % chunks) * 2 * W, bh = item / chunks, b = bh / H, h = bh % H;
    auto& gb = gbufs[thread_index()];
    gb.resize(L * 2 * W);
    load_chunk<T, W>(g.grad_y.row(b, h, 0), g.grad_y.sn, N, C, c0, L, gb.data());
    fft::forward_padded<T, W>(*plan, gb.data(), N);
    if (want_c) {
      auto& xb = xbufs[thread_index()];
      xb.resize(L * 2 * W);
      load_chunk<T, W>(p.x.row(b, h, 0), p.x.sn, N, C, c0, L, xb.data());
      fft::forward_padded<T, W>(*plan, xb.data(), N);
      accumulate_cross<T, W>(gb.data(), xb.data(), L, cross.data() + item * 2 * L);
    }
    if (want_x) {
      fft::inverse_product<T, W>(*plan, gb.data(), z.data() + h * 2 * L, true, N);
      store_chunk<T, W>(gb.data(), N, C, c0, g.grad_x.row(b, h, 0), g.grad_x.sn);
    }
  });
  if (!want_c) return;
  // Heads sharing one coefficient vector (stride 0) sum into it.
  const int64_t outs = p.coeffs_stride_h == 0 ? 1 : H;
  std::vector<T> sum(outs * 2 * L, T(0));
  parallel_for(outs, nt, [&](int64_t o) {
    T* s = sum.data() + o * 2 * L;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h) {
        if (outs == H && h != o) continue;
        for (int64_t ch = 0; ch < chunks; ++ch) {
          const T* src = cross.data() + ((b * H + h) * chunks + ch) * 2 * L;
          for (int64_t f = 0; f < 2 * L; ++f) s[f] += src[f];
        }
      }
  });
  coeff_grads_from_cross(*plan, sum.data(), outs, N, p.causal, g.grad_coeffs);
}

template void fft_forward<float>(const ToeplitzParams<float>&, BHND<float>);
template void fft_forward<double>(const ToeplitzParams<double>&, BHND<double>);
template void fft_backward<float>(const ToeplitzParams<float>&, const ToeplitzGrads<float>&);
template void fft_backward<double>(const ToeplitzParams<double>&, const ToeplitzGrads<double>&);

}  // namespace toeplitz_detail
LONGATTN_ISA_END
}  // namespace longattn::kernels
