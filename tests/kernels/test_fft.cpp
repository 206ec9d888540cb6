#include <gtest/gtest.h>

#include <cmath>
#include <complex>
#include <vector>

#include "kernels/fft/fft.h"
#include "reference.h"

namespace fft = longattn::kernels::fft;
using cd = std::complex<double>;

namespace {

// Naive DFT in double, the reference: X[f] = sum_t x[t] exp(-2 pi i f t / n).
std::vector<cd> naive_dft(const std::vector<cd>& x) {
  const int64_t n = static_cast<int64_t>(x.size());
  std::vector<cd> X(n), w(n);
  for (int64_t k = 0; k < n; ++k) w[k] = std::polar(1.0, -2.0 * M_PI * double(k) / double(n));
  for (int64_t f = 0; f < n; ++f) {
    cd s = 0;
    for (int64_t t = 0; t < n; ++t) s += x[t] * w[f * t % n];
    X[f] = s;
  }
  return X;
}

template <class T, int W>
void check_against_naive(int64_t n, double tol) {
  auto plan = fft::plan<T>(n);
  auto src = testing_ref::random_vector<double>(n * 2 * W, 7 + n);
  std::vector<T> buf(src.begin(), src.end());
  fft::forward<T, W>(*plan, buf.data());
  double worst = 0, scale = std::sqrt(double(n));  // |X| ~ sqrt(n) for unit random input
  for (int l : {0, W / 2, W - 1}) {  // lanes are independent; three of them suffice
    std::vector<cd> x(n);
    for (int64_t t = 0; t < n; ++t) x[t] = cd(T(src[t * 2 * W + l]), T(src[t * 2 * W + W + l]));
    auto X = naive_dft(x);
    for (int64_t p = 0; p < n; ++p) {
      cd got(buf[p * 2 * W + l], buf[p * 2 * W + W + l]);
      worst = std::max(worst, std::abs(got - X[plan->order[p]]) / scale);
    }
  }
  EXPECT_LT(worst, tol) << "n=" << n << " W=" << W;
  // Round trip: inverse(forward(x)) = n x.
  fft::inverse<T, W>(*plan, buf.data());
  double rt = 0;
  for (int64_t i = 0; i < n * 2 * W; ++i) rt = std::max(rt, double(std::abs(buf[i] / T(n) - T(src[i]))));
  EXPECT_LT(rt, tol) << "round trip n=" << n;
}

}  // namespace

// Tolerances: a radix-4 FFT's error grows like eps * log2(n) relative to the rms of the
// spectrum; 2e-12 (double) and 2e-5 (float) leave a margin of ~10x at n = 4096.
TEST(Fft, MatchesNaiveDftDouble) {
  for (int64_t n : {1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 512, 768, 2048}) {
    check_against_naive<double, 1>(n, 2e-12);
    check_against_naive<double, fft::kLanes<double>>(n, 2e-12);
  }
}

TEST(Fft, MatchesNaiveDftFloat) {
  for (int64_t n : {1, 2, 3, 8, 12, 64, 256, 768, 1024}) {
    check_against_naive<float, 1>(n, 2e-5);
    check_against_naive<float, fft::kLanes<float>>(n, 2e-5);
  }
}

TEST(Fft, OrderIsAPermutation) {
  for (int64_t n : {1, 2, 3, 8, 32, 96, 1024, 8192, 12288}) {
    auto plan = fft::plan<float>(n);
    std::vector<int> seen(n, 0);
    for (int64_t p = 0; p < n; ++p) seen[plan->order[p]]++;
    for (int64_t f = 0; f < n; ++f) EXPECT_EQ(seen[f], 1);
  }
  EXPECT_EQ(fft::fast_length(1), 1);
  EXPECT_EQ(fft::fast_length(5), 6);
  EXPECT_EQ(fft::fast_length(7), 8);
  EXPECT_EQ(fft::fast_length(8), 8);
  EXPECT_EQ(fft::fast_length(2 * 4099 - 1), 12288);
  EXPECT_EQ(fft::fast_length(2 * 4096 - 1), 8192);
}

// Large sizes go through the depth-first recursion: check the round trip and Parseval there
// (a naive DFT would be too slow), and a single impulse, whose spectrum is known exactly.
TEST(Fft, LargeRoundTripAndImpulse) {
  for (int64_t n : {int64_t{1} << 15, int64_t{3} << 14}) {
    constexpr int W = fft::kLanes<double>;
    auto plan = fft::plan<double>(n);
    std::vector<double> buf(n * 2 * W, 0.0);
    const int64_t t0 = 12345;
    for (int l = 0; l < W; ++l) buf[t0 * 2 * W + l] = 1.0 + l;  // impulse of height 1+l at t0
    fft::forward<double, W>(*plan, buf.data());
    double worst = 0;
    for (int64_t p = 0; p < n; ++p) {
      const int64_t f = plan->order[p];
      cd expect = std::polar(1.0, -2.0 * M_PI * double(f * t0 % n) / n);
      for (int l = 0; l < W; ++l)
        worst = std::max(worst, std::abs(cd(buf[p * 2 * W + l], buf[p * 2 * W + W + l]) - (1.0 + l) * expect));
    }
    EXPECT_LT(worst, 1e-11);
    fft::inverse<double, W>(*plan, buf.data());
    for (int64_t t = 0; t < n; ++t)
      for (int l = 0; l < 2 * W; ++l) {
        double expect = (t == t0 && l < W) ? (1.0 + l) * n : 0.0;
        ASSERT_NEAR(buf[t * 2 * W + l], expect, 1e-7);
      }
  }
}

// The convolution helpers against the plain transforms: forward_padded on a half-filled signal
// (garbage beyond `valid` must be ignored), inverse_product against an explicit product and
// inverse, on the outputs that are kept. Power-of-two sizes above and below the depth-first
// threshold, and 3 * 2^k. Double; identical arithmetic up to rounding (1e-9 relative to n).
TEST(Fft, PaddedForwardAndInverseProduct) {
  constexpr int W = fft::kLanes<double>;
  for (int64_t n : {16, 64, 2048, 8192, 6144}) {
    auto plan = fft::plan<double>(n);
    const int64_t valid = n / 2 - 3, keep = n / 2;
    auto src = testing_ref::random_vector<double>(n * 2 * W, 40 + n);
    std::vector<double> a(src), b(src);
    std::fill(a.begin() + valid * 2 * W, a.end(), 0.0);
    for (int64_t i = valid * 2 * W; i < n * 2 * W; ++i) b[i] = 1e30;  // must not be read
    fft::forward<double, W>(*plan, a.data());
    fft::forward_padded<double, W>(*plan, b.data(), valid);
    for (int64_t i = 0; i < n * 2 * W; ++i) ASSERT_NEAR(a[i], b[i], 1e-9 * n) << n << " " << i;
    auto z = testing_ref::random_vector<double>(2 * n, 50 + n);
    for (bool conj : {false, true}) {
      std::vector<double> c(a), d(a);
      for (int64_t f = 0; f < n; ++f) {
        const double zr = z[2 * f], zi = conj ? -z[2 * f + 1] : z[2 * f + 1];
        for (int l = 0; l < W; ++l) {
          const double re = c[f * 2 * W + l], im = c[f * 2 * W + W + l];
          c[f * 2 * W + l] = re * zr - im * zi;
          c[f * 2 * W + W + l] = re * zi + im * zr;
        }
      }
      fft::inverse<double, W>(*plan, c.data());
      fft::inverse_product<double, W>(*plan, d.data(), z.data(), conj, keep);
      for (int64_t i = 0; i < keep * 2 * W; ++i) ASSERT_NEAR(c[i], d[i], 1e-9 * n) << n << " " << i;
    }
  }
}
