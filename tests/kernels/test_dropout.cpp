// Dropout's counter-based mask: the documented stream, its statistics (bounds of 6 standard
// deviations of the counts, derived below), determinism across threads, the backward identity.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/dropout/dropout.h"

using longattn::kernels::DropoutParams;
using longattn::kernels::dropout_apply;
using longattn::kernels::dropout_mask;
using longattn::kernels::dropout_scale;
using longattn::kernels::dropout_threshold;

namespace {

// The stream as docs describe it, written out element by element.
bool reference_keep(uint64_t seed, double p, int64_t i) {
  uint64_t z = seed + uint64_t(i / 4 + 1) * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  const uint32_t bits = uint32_t((z >> (16 * (i % 4))) & 0xFFFF);
  return bits >= uint32_t(std::lround(p * 65536.0));
}

std::vector<uint8_t> mask(uint64_t seed, double p, int64_t n) {
  std::vector<uint8_t> m(static_cast<size_t>(n));
  dropout_mask(DropoutParams{p, seed, 1}, m.data(), n);
  return m;
}

}  // namespace

TEST(Dropout, ApplyFollowsTheDocumentedStreamAndScale) {
  const int64_t n = 1003;  // not a multiple of 4: the tail
  std::vector<double> x(n), y(n);
  for (int64_t i = 0; i < n; ++i) x[size_t(i)] = 0.5 + double(i % 17);
  const double p = 0.3;
  dropout_apply(DropoutParams{p, 42, 1}, x.data(), y.data(), n);
  const double scale = 65536.0 / (65536.0 - double(dropout_threshold(p)));
  EXPECT_DOUBLE_EQ(dropout_scale(p), scale);
  for (int64_t i = 0; i < n; ++i)
    EXPECT_EQ(y[size_t(i)], reference_keep(42, p, i) ? x[size_t(i)] * scale : 0.0) << i;
  // p = 0: the identity.
  dropout_apply(DropoutParams{0.0, 42, 1}, x.data(), y.data(), n);
  EXPECT_EQ(x, y);
}

TEST(Dropout, DropRateAndPairwiseIndependence) {
  const int64_t n = int64_t(1) << 20;
  for (double p : {0.1, 0.5}) {
    const std::vector<uint8_t> m = mask(7, p, n);
    const double q = double(dropout_threshold(p)) / 65536.0;  // the exact drop probability
    // Drops: binomial(n, q), sd = sqrt(n q (1 - q)).
    int64_t drops = 0;
    for (uint8_t k : m) drops += !k;
    EXPECT_LT(std::fabs(double(drops) - n * q), 6 * std::sqrt(n * q * (1 - q))) << "p " << p;
    // Per lane (i % 4: different bits of one hash): n/4 trials each.
    for (int lane = 0; lane < 4; ++lane) {
      int64_t d = 0;
      for (int64_t i = lane; i < n; i += 4) d += !m[size_t(i)];
      EXPECT_LT(std::fabs(double(d) - n / 4 * q), 6 * std::sqrt(n / 4 * q * (1 - q))) << "lane " << lane;
    }
    // Both of (i, i + lag) dropped: mean (n - lag) q^2 if independent. Overlapping pairs share an
    // element, so var <= n [q^2 (1 - q^2) + 2 (q^3 - q^4)] (each pair correlates with two others).
    for (int64_t lag : {1, 3, 4, 5}) {
      int64_t both = 0;
      for (int64_t i = 0; i + lag < n; ++i) both += !m[size_t(i)] && !m[size_t(i + lag)];
      const double var = n * (q * q * (1 - q * q) + 2 * (q * q * q - q * q * q * q));
      EXPECT_LT(std::fabs(double(both) - double(n - lag) * q * q), 6 * std::sqrt(var)) << "p " << p << " lag " << lag;
    }
  }
}

TEST(Dropout, SeedsGiveIndependentMasks) {
  const int64_t n = int64_t(1) << 18;
  const double p = 0.5, q = double(dropout_threshold(p)) / 65536.0;
  const std::vector<uint8_t> a = mask(1, p, n), b = mask(2, p, n);
  // Agreement of independent masks: Bernoulli(q^2 + (1 - q)^2) per element.
  const double agree_p = q * q + (1 - q) * (1 - q);
  int64_t agree = 0;
  for (int64_t i = 0; i < n; ++i) agree += a[size_t(i)] == b[size_t(i)];
  EXPECT_LT(std::fabs(double(agree) - n * agree_p), 6 * std::sqrt(n * agree_p * (1 - agree_p)));
  // A shifted seed is not a shifted stream: seed + golden would reuse element i + 4's hash.
  const std::vector<uint8_t> c = mask(1 + 0x9E3779B97F4A7C15ull, p, n);
  int64_t same_as_shift = 0;
  for (int64_t i = 0; i + 4 < n; ++i) same_as_shift += c[size_t(i)] == a[size_t(i + 4)];
  EXPECT_EQ(same_as_shift, n - 4) << "documented property of the counter stream (seeds are drawn at random)";
}

TEST(Dropout, SameBitsWhateverTheThreadCountAndInPlace) {
  const int64_t n = (int64_t(1) << 18) + 5;
  std::vector<float> x(static_cast<size_t>(n)), y1(static_cast<size_t>(n)), y2(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) x[size_t(i)] = float(std::sin(double(i)));
  dropout_apply(DropoutParams{0.2, 99, 1}, x.data(), y1.data(), n);
  dropout_apply(DropoutParams{0.2, 99, 2}, x.data(), y2.data(), n);
  EXPECT_EQ(y1, y2);
  std::vector<float> z = x;
  dropout_apply(DropoutParams{0.2, 99, 2}, z.data(), z.data(), n);
  EXPECT_EQ(z, y1);
  const std::vector<uint8_t> m = mask(99, 0.2, n);
  for (int64_t i = 0; i < n; ++i) EXPECT_EQ(y1[size_t(i)] != 0.0f, m[size_t(i)] && x[size_t(i)] != 0.0f);
}
