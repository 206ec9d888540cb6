// The reference path of the Toeplitz products (ops/reference/toeplitz.h): torch.fft, channel
// chunks, device-generic.
//
//   y_i = sum_j a[j - i + N - 1] x_j = (rev(a) * x)[N - 1 + i]   (a linear convolution)
//
// A circular convolution of length L >= 2N - 1 gives the N wanted entries of it without
// wrap-around (they sit at [N - 1, 2N - 1), and the aliased tail starts at L + N - 1 > 2N - 2);
// L is the next power of two. Causal: the coefficients of offsets r > 0 are zeroed, except that an
// FFT mixes every row into every output, so a NaN or inf in a later row of x would reach earlier
// outputs through 0 * inf; as in the fused kernel, (batch, head) slices holding one are redone by
// a direct product that never reads the excluded rows (masked products on the diagonal blocks).
// Backward: grad_x_j = sum_i a[N - 1 + j - i] g_i = (a * g)[N - 1 + j], and
// grad_a[r + N - 1] = sum_{b, c, i} g_i x_{i + r}, a correlation summed over batch and channels in
// the frequency domain (one inverse transform per head); causal: r > 0 gets 0, as in the kernel.
// 2-D: the kernel's separable form, 1-D products on row sums [height, C] and column sums
// [width, C], broadcast back.
//
// Peak memory (elements of the compute dtype; E = kReferenceChunkElements = 2^24; L = the next
// power of two >= 2N - 1; a chunk holds cc = max(1, E / (B H L)) channels, so each temporary of a
// chunk, a spectrum [B, H, L/2 + 1, cc] complex or an inverse transform [B, H, L, cc], is about E):
//   forward:  B H N C (the output) + H L (coefficient spectrum) + 4 E
//             (padded input, its spectrum, the product, the inverse transform)
//   backward: B H N C (grad_x) + 2 H L (spectra of a and the accumulated cross spectrum)
//             + 6 E (padded g and x, their spectra, a product, an inverse transform)
//   causal with a non-finite slice, in addition per such slice: a row block of rb = 64 rows,
//   rb N coefficients + rb^2 C products, bounded by E when N, C <= E / 64.
//   half precision: float32 copies of the inputs and outputs, 2 B H N C more.
//   2-D: the 1-D figures with N = height (and width) on the sums, + B H N C for the broadcast.
// None of them holds an N x N tensor.
#include "ops/reference/toeplitz.h"

#include <algorithm>

#include "ops/common.h"

namespace longattn::ops::reference {
namespace {

int64_t fft_length(int64_t N) {
  int64_t L = 1;
  while (L < 2 * N - 1) L <<= 1;
  return L;
}

// Channels per chunk: every temporary of a chunk, B H L cc elements, within the budget.
int64_t channel_chunk(const at::Tensor& x, int64_t L) {
  return reference_chunk_rows(x.size(0) * x.size(1) * L);
}

// a with the coefficients of offsets r > 0 (indices >= N) zeroed when causal.
at::Tensor causal_coeffs(const at::Tensor& coeffs, int64_t N, bool causal) {
  if (!causal || N <= 1) return coeffs;
  at::Tensor a = coeffs.clone();
  a.narrow(1, N, N - 1).zero_();
  return a;
}

// y[b, h] = T_h x[b, h] for the slice (b, h) of x [N, C] with only keys j <= i, computed directly
// so that a row j > i is never read: plain matmul over the rows wholly in the past of a row block,
// masked products (torch.where, not a zero weight: 0 * inf is NaN) on its diagonal block.
at::Tensor causal_direct_slice(const at::Tensor& a, const at::Tensor& xs) {
  const int64_t N = xs.size(0);
  constexpr int64_t kRows = 64;
  at::Tensor y = at::empty_like(xs);
  auto idx_opts = xs.options().dtype(at::kLong);
  for (int64_t i0 = 0; i0 < N; i0 += kRows) {
    const int64_t rb = std::min(kRows, N - i0);
    at::Tensor rows = at::arange(i0, i0 + rb, idx_opts).unsqueeze(1);  // [rb, 1]
    at::Tensor acc;
    if (i0 > 0) {
      at::Tensor past = at::arange(0, i0, idx_opts).unsqueeze(0);  // [1, i0]
      acc = at::matmul(a.index({past - rows + (N - 1)}), xs.narrow(0, 0, i0));
    }
    at::Tensor diag = at::arange(i0, i0 + rb, idx_opts).unsqueeze(0);  // [1, rb]
    at::Tensor keep = (diag <= rows).unsqueeze(2);                    // [rb, rb, 1]
    at::Tensor w = a.index({at::clamp_max(diag - rows, 0) + (N - 1)}).unsqueeze(2);
    at::Tensor prod = at::where(keep, w * xs.narrow(0, i0, rb).unsqueeze(0), at::zeros({}, xs.options()));
    at::Tensor d = prod.sum(1);
    y.narrow(0, i0, rb).copy_(acc.defined() ? acc + d : d);
  }
  return y;
}

at::Tensor forward_float(const at::Tensor& coeffs, const at::Tensor& x, bool causal) {
  const int64_t N = x.size(2), C = x.size(3);
  at::Tensor y = at::empty(x.sizes(), x.options());
  if (y.numel() == 0) return y;
  const int64_t L = fft_length(N);
  const at::Tensor a = causal_coeffs(coeffs, N, causal);
  // rev(a)'s spectrum, [1, H, L/2 + 1, 1] against x's [B, H, L/2 + 1, cc].
  const at::Tensor spec = at::fft_rfft(a.flip({1}), L, 1).unsqueeze(0).unsqueeze(3);
  const int64_t cc = channel_chunk(x, L);
  for (int64_t c0 = 0; c0 < C; c0 += cc) {
    const int64_t n = std::min(cc, C - c0);
    at::Tensor X = at::fft_rfft(x.narrow(3, c0, n), L, 2);
    y.narrow(3, c0, n).copy_(at::fft_irfft(X.mul_(spec), L, 2).narrow(2, N - 1, N));
  }
  if (causal) {
    // One device-to-host read per call: which (batch, head) slices hold a non-finite value.
    at::Tensor bad = at::isfinite(x).logical_not().any(3).any(2);  // [B, H]
    if (bad.any().item<bool>()) {
      at::Tensor where = bad.nonzero().cpu();
      for (int64_t s = 0; s < where.size(0); ++s) {
        const int64_t b = where[s][0].item<int64_t>(), h = where[s][1].item<int64_t>();
        y[b][h].copy_(causal_direct_slice(a[h], x[b][h]));
      }
    }
  }
  return y;
}

std::tuple<at::Tensor, at::Tensor> backward_float(const at::Tensor& grad_y, const at::Tensor& coeffs,
                                                  const at::Tensor& x, bool causal, bool want_x,
                                                  bool want_coeffs) {
  const int64_t N = x.size(2), C = x.size(3);
  at::Tensor gx = want_x ? at::empty(x.sizes(), x.options()) : at::Tensor();
  at::Tensor gc;
  if (x.numel() == 0) {
    if (want_x) gx.zero_();
    if (want_coeffs) gc = at::zeros(coeffs.sizes(), coeffs.options());
    return {gx, gc};
  }
  const int64_t L = fft_length(N);
  const at::Tensor a = causal_coeffs(coeffs, N, causal);
  at::Tensor spec_a = want_x ? at::fft_rfft(a, L, 1).unsqueeze(0).unsqueeze(3) : at::Tensor();
  at::Tensor cross;  // [H, L/2 + 1]: sum over batch and channels of conj(G) X
  const int64_t cc = channel_chunk(x, L);
  for (int64_t c0 = 0; c0 < C; c0 += cc) {
    const int64_t n = std::min(cc, C - c0);
    at::Tensor G = at::fft_rfft(grad_y.narrow(3, c0, n), L, 2);
    if (want_coeffs) {
      at::Tensor X = at::fft_rfft(x.narrow(3, c0, n), L, 2);
      at::Tensor part = X.mul_(G.conj()).sum({0, 3});
      cross = cross.defined() ? cross.add_(part) : part;
    }
    if (want_x) gx.narrow(3, c0, n).copy_(at::fft_irfft(G.mul_(spec_a), L, 2).narrow(2, N - 1, N));
  }
  if (want_coeffs) {
    // corr[r mod L] = sum g_i x_{i + r}: offsets -(N-1)..-1 sit at the end, 0..N-1 at the start.
    at::Tensor corr = at::fft_irfft(cross, L, 1);
    gc = at::cat({corr.narrow(1, L - (N - 1), N - 1), corr.narrow(1, 0, N)}, 1).to(coeffs.scalar_type());
    if (causal && N > 1) gc.narrow(1, N, N - 1).zero_();
  }
  return {gx, gc};
}

// The image's row sums [B, H, height, C] and column sums [B, H, width, C].
std::tuple<at::Tensor, at::Tensor> row_col_sums(const at::Tensor& x, int64_t height, int64_t width) {
  at::Tensor img = x.reshape({x.size(0), x.size(1), height, width, x.size(3)});
  return {img.sum(3), img.sum(2)};
}

// out[b, h, (a, w)] = rows[b, h, a] + cols[b, h, w].
at::Tensor broadcast_sum(const at::Tensor& rows, const at::Tensor& cols) {
  const int64_t B = rows.size(0), H = rows.size(1), hh = rows.size(2), ww = cols.size(2), C = rows.size(3);
  return (rows.unsqueeze(3) + cols.unsqueeze(2)).reshape({B, H, hh * ww, C});
}

}  // namespace

at::Tensor toeplitz_forward(const at::Tensor& coeffs, const at::Tensor& x, bool causal, int64_t /*path*/) {
  if (is_half(x)) return as_dtype_of(forward_float(to_float32(coeffs), to_float32(x), causal), x);
  return forward_float(coeffs, x, causal);
}

std::tuple<at::Tensor, at::Tensor> toeplitz_backward(const at::Tensor& grad_y, const at::Tensor& coeffs,
                                                     const at::Tensor& x, bool causal, int64_t /*path*/,
                                                     bool want_x, bool want_coeffs) {
  if (is_half(x)) {
    auto [gx, gc] = backward_float(to_float32(grad_y), to_float32(coeffs), to_float32(x), causal, want_x,
                                   want_coeffs);
    return {as_dtype_of(gx, x), as_dtype_of(gc, coeffs)};
  }
  return backward_float(grad_y, coeffs, x, causal, want_x, want_coeffs);
}

at::Tensor toeplitz2d_forward(const at::Tensor& row, const at::Tensor& col, const at::Tensor& x,
                              int64_t height, int64_t width, int64_t path) {
  if (is_half(x))
    return as_dtype_of(toeplitz2d_forward(to_float32(row), to_float32(col), to_float32(x), height, width, path), x);
  if (x.numel() == 0) return at::empty(x.sizes(), x.options());
  auto [rows, cols] = row_col_sums(x, height, width);
  return broadcast_sum(forward_float(row, rows, false), forward_float(col, cols, false));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> toeplitz2d_backward(const at::Tensor& grad_y,
                                                                   const at::Tensor& row,
                                                                   const at::Tensor& col,
                                                                   const at::Tensor& x, int64_t height,
                                                                   int64_t width, int64_t path) {
  if (is_half(x)) {
    auto [gx, gr, gc] = toeplitz2d_backward(to_float32(grad_y), to_float32(row), to_float32(col), to_float32(x),
                                            height, width, path);
    return {as_dtype_of(gx, x), as_dtype_of(gr, row), as_dtype_of(gc, col)};
  }
  if (x.numel() == 0)
    return {at::zeros(x.sizes(), x.options()), at::zeros(row.sizes(), row.options()),
            at::zeros(col.sizes(), col.options())};
  auto [xr, xc] = row_col_sums(x, height, width);
  auto [gyr, gyc] = row_col_sums(grad_y, height, width);
  auto [gxr, gr] = backward_float(gyr, row, xr, false, true, true);
  auto [gxc, gc] = backward_float(gyc, col, xc, false, true, true);
  return {broadcast_sum(gxr, gxc), gr, gc};
}

}  // namespace longattn::ops::reference
