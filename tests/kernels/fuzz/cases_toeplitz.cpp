// Fuzz cases of the Toeplitz products (1-D, 2-D) and the FFT under them.
#include "fuzz/kernel_fuzz_common.h"

namespace kernel_fuzz {

// ---------------------------------------------------------------------------------------------
// Toeplitz products.

// log2 of the FFT length the kernels use for 2N - 1 (an upper bound: the next power of two).
double log2_fft_length(int64_t N) { return std::ceil(std::log2(double(std::max<int64_t>(2 * N - 1, 2)))); }

// Reference of y_i = sum_j c[j - i + N - 1] x_j (j <= i when causal), per (b, h) and channel.
// Tolerance, an a-priori bound on either path, per (b, h):
//  * direct (GEMM in T): |err_i| <= N eps_T sum_j |c||x|;
//  * FFT: an FFT of length L is normwise accurate to ~log2(L) eps_T, which gives, for the
//    convolution of two vectors, |err|_inf <= c eps_T log2(L) (|c|_2 |x|_1 + |c|_1 |x|_2); two
//    channels share a complex lane, so |x| is the largest over the channels; c = 8 for margin.
// A wrong offset or causal boundary moves outputs by O(|c| |x|), far beyond this.
template <class T>
void toeplitz_reference_check(const ToeplitzParams<T>& p, const BHND<T>& y) {
  const int64_t B = p.x.B, H = p.x.H, N = p.x.N, C = p.x.D;
  const double logL = log2_fft_length(N);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      const T* c = p.coeffs + h * p.coeffs_stride_h;
      double c1 = 0, c2 = 0, x1 = 0, x2 = 0;
      for (int64_t r = 0; r < 2 * N - 1; ++r) c1 += std::abs(double(c[r])), c2 += double(c[r]) * double(c[r]);
      for (int64_t ch = 0; ch < C; ++ch) {
        double s1 = 0, s2 = 0;
        for (int64_t j = 0; j < N; ++j) s1 += std::abs(at(p.x, b, h, j, ch)), s2 += at(p.x, b, h, j, ch) * at(p.x, b, h, j, ch);
        x1 = std::max(x1, s1);
        x2 = std::max(x2, s2);
      }
      const double fft_tol = 8 * kEps<T> * (logL + 2) * (std::sqrt(c2) * x1 + c1 * std::sqrt(x2));
      for (int64_t i = 0; i < N; ++i)
        for (int64_t ch = 0; ch < C; ++ch) {
          double ref = 0, mag = 0;
          for (int64_t j = 0; j < N; ++j) {
            if (p.causal && j > i) continue;
            const double t = double(c[j - i + N - 1]) * at(p.x, b, h, j, ch);
            ref += t;
            mag += std::abs(t);
          }
          const double tol = std::max(fft_tol, double(N + 2) * kEps<T> * mag) + 16 * double(N) * (logL + 2) * kTiny<T>;
          const double got = at(y, b, h, i, ch);
          if (!(std::abs(got - ref) <= tol))
            fail("toeplitz y[%lld,%lld,%lld,%lld] = %.9g, reference %.9g, tolerance %.3g", (long long)b, (long long)h,
                 (long long)i, (long long)ch, got, ref, tol);
        }
    }
}

const ToeplitzPath kPaths[] = {ToeplitzPath::Auto, ToeplitzPath::Direct, ToeplitzPath::Fft};
const char* path_name(ToeplitzPath p) { return p == ToeplitzPath::Auto ? "auto" : p == ToeplitzPath::Direct ? "direct" : "fft"; }

template <class T>
void toeplitz_case(Bytes& in, uint64_t seed, Stats& st) {
  int64_t B = size_in(in, 1, 3), H = size_in(in, 1, 3), N = size_in(in, 1, 300), C = size_in(in, 1, 80);
  fit_budget({&B, &H, &N, &N, &C}, 1e6);  // the reference is O(N^2 C)
  ToeplitzParams<T> p;
  p.causal = in.u8() & 1;
  p.path = in.pick(kPaths);
  p.threads = pick_threads(in);
  const bool shared = in.u8() & 1;
  describe("toeplitz<%s> B=%lld H=%lld N=%lld C=%lld causal=%d path=%s coeffs=%s", type_name(T()), (long long)B,
           (long long)H, (long long)N, (long long)C, p.causal, path_name(p.path), shared ? "shared" : "per-head");
  auto x = input_tensor<T>("x", in, seed + 1, B, H, N, C, &p.x);
  const int64_t R = 2 * N - 1, stride = shared ? 0 : R + in.below(3);
  auto coeffs = rows_buffer<T>("coeffs", H, R, stride);
  const ValueSpec sc = value_spec(in, seed + 2);
  fill_values(coeffs, sc);
  describe("coeffs:%s%s", kRegimeNames[sc.regime], sc.special_log2 >= 0 ? "+nonfinite" : "");
  snapshot(coeffs);
  p.coeffs = coeffs.ptr();
  p.coeffs_stride_h = stride;
  BHND<T> yv;
  auto y = output_tensor<T>("y", in, B, H, N, C, &yv);
  toeplitz_forward(p, yv);
  check_unchanged(x);
  check_unchanged(coeffs);
  check_output(y);
  const bool finite = moderate(x) && moderate(coeffs);
  if (finite) {
    ++st.finite_checked[kToeplitz];
    check_finite(y);
    toeplitz_reference_check(p, yv);
    ++st.reference_checked[kToeplitz];
  }
  if (!(in.u8() & 1)) return;
  ++st.backward[kToeplitz];
  ToeplitzGrads<T> g;
  auto gy = input_tensor<T>("grad_y", in, seed + 3, B, H, N, C, &g.grad_y, finite);
  const uint8_t want = in.u8() % 3;  // 0: both, 1: grad_x only, 2: grad_coeffs only
  BHND<T> gxv;
  auto gx = output_tensor<T>("grad_x", in, want != 2 ? B : 0, H, N, C, &gxv);
  if (want != 2) g.grad_x = gxv;
  auto gc = flat<T>("grad_coeffs", want != 1 ? (shared ? 1 : H) * R : 0, output_pad<T>());
  g.grad_coeffs = want != 1 ? gc.ptr() : nullptr;
  toeplitz_backward(p, g);
  check_unchanged(x);
  check_unchanged(coeffs);
  check_unchanged(gy);
  check_output(gx);
  check_output(gc);
  if (finite && moderate(gy)) {
    check_finite(gx);
    check_finite(gc);
  }
}

// 2-D: (B x)[a, b] = sum_{a', b'} (row[a' - a + h - 1] + col[b' - b + w - 1]) x[a', b'], against
// the dense sum in double. The kernel computes the 1-D products of the row sums and of the
// column sums, so the tolerance is the 1-D bound above for each (with the sums of |x| standing
// for the sums, an upper bound of their norms), plus (N + 2) eps_T sum |coefficient| |x| for
// the sums themselves and the direct path.
template <class T>
double fft_conv_bound(const T* c, int64_t n, const std::vector<std::vector<double>>& abs_sums) {
  double c1 = 0, c2 = 0, s1 = 0, s2 = 0;
  for (int64_t r = 0; r < 2 * n - 1; ++r) c1 += std::abs(double(c[r])), c2 += double(c[r]) * double(c[r]);
  for (const auto& a : abs_sums) {  // one per channel
    double t1 = 0, t2 = 0;
    for (double e : a) t1 += e, t2 += e * e;
    s1 = std::max(s1, t1);
    s2 = std::max(s2, t2);
  }
  return 8 * kEps<T> * (log2_fft_length(n) + 2) * (std::sqrt(c2) * s1 + c1 * std::sqrt(s2));
}

template <class T>
void toeplitz2d_case(Bytes& in, uint64_t seed, Stats& st) {
  int64_t B = size_in(in, 1, 3), H = size_in(in, 1, 3), height = size_in(in, 1, 40), width = size_in(in, 1, 40);
  int64_t C = size_in(in, 1, 80);
  fit_budget({&height, &width}, 300);
  fit_budget({&B, &H, &height, &width, &height, &width, &C}, 1e6);
  Toeplitz2dParams<T> p;
  p.height = height;
  p.width = width;
  p.path = in.pick(kPaths);
  p.threads = pick_threads(in);
  const int64_t N = height * width;
  const bool shared = in.u8() & 1;
  describe("toeplitz2d<%s> B=%lld H=%lld height=%lld width=%lld C=%lld path=%s coeffs=%s", type_name(T()),
           (long long)B, (long long)H, (long long)height, (long long)width, (long long)C, path_name(p.path),
           shared ? "shared" : "per-head");
  auto x = input_tensor<T>("x", in, seed + 1, B, H, N, C, &p.x);
  const int64_t Rr = 2 * height - 1, Rc = 2 * width - 1;
  p.row_stride_h = shared ? 0 : Rr + in.below(3);
  p.col_stride_h = shared ? 0 : Rc + in.below(3);
  auto row = rows_buffer<T>("row_coeffs", H, Rr, p.row_stride_h);
  auto col = rows_buffer<T>("col_coeffs", H, Rc, p.col_stride_h);
  const ValueSpec sc = value_spec(in, seed + 2);
  fill_values(row, sc);
  fill_values(col, ValueSpec{sc.regime, sc.special_log2, sc.seed + 1});
  describe("coeffs:%s%s", kRegimeNames[sc.regime], sc.special_log2 >= 0 ? "+nonfinite" : "");
  snapshot(row);
  snapshot(col);
  p.row_coeffs = row.ptr();
  p.col_coeffs = col.ptr();
  BHND<T> yv;
  auto y = output_tensor<T>("y", in, B, H, N, C, &yv);
  toeplitz2d_forward(p, yv);
  for (auto* b : {&x, &row, &col}) check_unchanged(*b);
  check_output(y);
  const bool finite = moderate(x) && moderate(row) && moderate(col);
  if (finite) {
    ++st.finite_checked[kToeplitz2d];
    check_finite(y);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h) {
        const T* rc = p.row_coeffs + h * p.row_stride_h;
        const T* cc = p.col_coeffs + h * p.col_stride_h;
        using Sums = std::vector<std::vector<double>>;
        Sums abs_rows(static_cast<size_t>(C), std::vector<double>(static_cast<size_t>(height)));
        Sums abs_cols(static_cast<size_t>(C), std::vector<double>(static_cast<size_t>(width)));
        for (int64_t ch = 0; ch < C; ++ch)
          for (int64_t a = 0; a < height; ++a)
            for (int64_t bb = 0; bb < width; ++bb) {
              const double ax = std::abs(at(p.x, b, h, a * width + bb, ch));
              abs_rows[size_t(ch)][size_t(a)] += ax;
              abs_cols[size_t(ch)][size_t(bb)] += ax;
            }
        const double fft_tol = fft_conv_bound(rc, height, abs_rows) + fft_conv_bound(cc, width, abs_cols);
        for (int64_t a = 0; a < height; ++a)
          for (int64_t bb = 0; bb < width; ++bb)
            for (int64_t ch = 0; ch < C; ++ch) {
              double ref = 0, mag = 0;
              for (int64_t a2 = 0; a2 < height; ++a2)
                for (int64_t b2 = 0; b2 < width; ++b2) {
                  const double xv = at(p.x, b, h, a2 * width + b2, ch);
                  const double r = double(rc[a2 - a + height - 1]), c = double(cc[b2 - bb + width - 1]);
                  ref += (r + c) * xv;
                  mag += (std::abs(r) + std::abs(c)) * std::abs(xv);
                }
              const double got = at(yv, b, h, a * width + bb, ch);
              const double tol = fft_tol + double(N + 2) * kEps<T> * mag +
                                 16 * double(N) * (log2_fft_length(N) + 2) * kTiny<T>;
              if (!(std::abs(got - ref) <= tol))
                fail("toeplitz2d y[%lld,%lld,(%lld,%lld),%lld] = %.9g, reference %.9g, tolerance %.3g", (long long)b,
                     (long long)h, (long long)a, (long long)bb, (long long)ch, got, ref, tol);
            }
      }
    ++st.reference_checked[kToeplitz2d];
  }
  if (!(in.u8() & 1)) return;
  ++st.backward[kToeplitz2d];
  Toeplitz2dGrads<T> g;
  auto gy = input_tensor<T>("grad_y", in, seed + 3, B, H, N, C, &g.grad_y, finite);
  const uint8_t want = in.u8() % 4;  // bit 0 off: grad_x; bit 1 off: the coefficients' gradients
  BHND<T> gxv;
  auto gx = output_tensor<T>("grad_x", in, (want & 1) ? 0 : B, H, N, C, &gxv);
  if (!(want & 1)) g.grad_x = gxv;
  const bool want_c = !(want & 2);
  auto gr = flat<T>("grad_row_coeffs", want_c ? (shared ? 1 : H) * Rr : 0, output_pad<T>());
  auto gc = flat<T>("grad_col_coeffs", want_c ? (shared ? 1 : H) * Rc : 0, output_pad<T>());
  g.grad_row_coeffs = want_c ? gr.ptr() : nullptr;
  g.grad_col_coeffs = want_c ? gc.ptr() : nullptr;
  toeplitz2d_backward(p, g);
  for (auto* b : {&x, &row, &col, &gy}) check_unchanged(*b);
  for (auto* b : {&gx, &gr, &gc}) check_output(*b);
  if (finite && moderate(gy))
    for (auto* b : {&gx, &gr, &gc}) check_finite(*b);
}


// ---------------------------------------------------------------------------------------------
// FFT (internal to the levels): forward_padded must equal the forward of the zero-padded signal
// whatever the unwritten tail holds; inverse_product's kept outputs must equal the inverse of
// the pointwise product done by hand; and the forward matches a naive DFT (lane 0).
// Tolerances: as the FFT tests, an FFT of length n is accurate to ~eps_T log2(n) relative to
// the rms of its output; with |x| <= 1 the spectrum's rms is <= sqrt(n), so
// 8 eps_T (log2 n + 1) sqrt(n) bounds the forward's error, and n times that the round trip's
// (unnormalised inverse of a spectrum of rms sqrt(n), times a unit-rms z).
template <class T>
void fft_case(Bytes& in, uint64_t seed, Stats& st) {
  using longattn::kernels::fft::fast_length;
  constexpr int W = fft::kLanes<T>;
  const int64_t n = fast_length(size_in(in, 1, 600));
  const int64_t valid = in.below(n + 1);
  const int64_t keep = in.below(n + 1);
  const bool conjugate = in.u8() & 1, with_z = in.u8() & 1;
  describe("fft<%s> n=%lld valid=%lld keep=%lld conjugate=%d z=%d", type_name(T()), (long long)n, (long long)valid,
           (long long)keep, conjugate, with_z);
  auto plan = fft::plan<T>(n);
  const int64_t len = n * 2 * W;
  // The signal: [0, valid) random in [-1, 1], the rest zero (for the reference) or the output
  // marker (for forward_padded, which must not read it).
  std::vector<double> sig(size_t(len), 0.0);
  SplitMix64 rng{seed};
  for (int64_t t = 0; t < valid; ++t)
    for (int64_t c = 0; c < 2 * W; ++c) sig[size_t(t * 2 * W + c)] = 2 * rng.uniform() - 1;
  auto full = flat<T>("fft_full", len, T(0));
  auto padded = flat<T>("fft_padded", len, output_pad<T>());
  for (int64_t i = 0; i < len; ++i) full.data[size_t(i)] = T(sig[size_t(i)]);
  for (int64_t i = 0; i < valid * 2 * W; ++i) padded.data[size_t(i)] = T(sig[size_t(i)]);
  fft::forward<T, W>(*plan, full.ptr());
  fft::forward_padded<T, W>(*plan, padded.ptr(), valid);
  const double tol_f = 8 * kEps<T> * (std::log2(double(n)) + 1) * std::sqrt(double(n)) + 1e-300;
  for (int64_t i = 0; i < len; ++i)
    if (!(std::abs(double(padded.data[size_t(i)]) - double(full.data[size_t(i)])) <= tol_f))
      fail("fft forward_padded[%lld] = %.9g, forward of the zero-padded signal %.9g", (long long)i,
           double(padded.data[size_t(i)]), double(full.data[size_t(i)]));
  // Lane 0 against the naive DFT, position p holding frequency order[p].
  for (int64_t pos = 0; pos < n; ++pos) {
    const int64_t f = plan->order[size_t(pos)];
    std::complex<double> X = 0;
    for (int64_t t = 0; t < valid; ++t)
      X += std::complex<double>(sig[size_t(t * 2 * W)], sig[size_t(t * 2 * W + W)]) *
           std::polar(1.0, -2.0 * M_PI * double((f * t) % n) / double(n));
    const std::complex<double> got(double(full.data[size_t(pos * 2 * W)]), double(full.data[size_t(pos * 2 * W + W)]));
    if (!(std::abs(got - X) <= tol_f))
      fail("fft forward: frequency %lld = (%.9g, %.9g), naive DFT (%.9g, %.9g)", (long long)f, got.real(), got.imag(),
           X.real(), X.imag());
  }
  // inverse_product against the product by hand followed by the full inverse.
  std::vector<T> z(size_t(2 * n));
  for (auto& e : z) e = T(2 * rng.uniform() - 1);
  for (int64_t pos = 0; pos < n; ++pos) {
    if (!with_z) break;
    const double zr = double(z[size_t(2 * pos)]), zi = (conjugate ? -1 : 1) * double(z[size_t(2 * pos + 1)]);
    for (int c = 0; c < W; ++c) {
      const double a = double(full.data[size_t(pos * 2 * W + c)]), b = double(full.data[size_t(pos * 2 * W + W + c)]);
      full.data[size_t(pos * 2 * W + c)] = T(a * zr - b * zi);
      full.data[size_t(pos * 2 * W + W + c)] = T(a * zi + b * zr);
    }
  }
  fft::inverse<T, W>(*plan, full.ptr());
  auto zbuf = flat<T>("z", with_z ? 2 * n : 0, T(0));
  std::copy(z.begin(), z.begin() + zbuf.len, zbuf.ptr());
  fft::inverse_product<T, W>(*plan, padded.ptr(), with_z ? zbuf.ptr() : nullptr, conjugate, keep);
  const double tol_i = 2 * double(n) * tol_f * (with_z ? 2 : 1);
  for (int64_t i = 0; i < keep * 2 * W; ++i) {
    const double got = double(padded.data[size_t(i)]), want = double(full.data[size_t(i)]);
    if (!(std::abs(got - want) <= tol_i))
      fail("fft inverse_product[%lld] = %.9g, by hand %.9g, tolerance %.3g", (long long)i, got, want, tol_i);
  }
  ++st.reference_checked[kFft];
  ++st.finite_checked[kFft];
}

template void toeplitz_case<float>(Bytes&, uint64_t, Stats&);
template void toeplitz_case<double>(Bytes&, uint64_t, Stats&);
template void toeplitz2d_case<float>(Bytes&, uint64_t, Stats&);
template void toeplitz2d_case<double>(Bytes&, uint64_t, Stats&);
template void fft_case<float>(Bytes&, uint64_t, Stats&);
template void fft_case<double>(Bytes&, uint64_t, Stats&);

}  // namespace kernel_fuzz
