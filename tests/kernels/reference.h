// Helpers shared by the kernel tests: seeded random data and comparisons.
// References for each primitive live beside its test, written for clarity, in double.
#pragma once
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

namespace testing_ref {

template <class T>
std::vector<T> random_vector(int64_t n, uint64_t seed, double lo = -1.0, double hi = 1.0) {
  std::mt19937_64 gen(seed);
  std::uniform_real_distribution<double> dist(lo, hi);
  std::vector<T> v(static_cast<size_t>(n));
  for (auto& x : v) x = static_cast<T>(dist(gen));
  return v;
}

template <class T>
std::vector<T> normal_vector(int64_t n, uint64_t seed, double stddev = 1.0) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> dist(0.0, stddev);
  std::vector<T> v(static_cast<size_t>(n));
  for (auto& x : v) x = static_cast<T>(dist(gen));
  return v;
}

// max |a - b| / (atol + rtol * |b|) over all elements; <= 1 means "close".
template <class A, class B>
double max_scaled_error(const A& a, const B& b, double atol, double rtol) {
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    double d = std::abs(double(a[i]) - double(b[i])) / (atol + rtol * std::abs(double(b[i])));
    if (!(d <= worst)) worst = std::isnan(d) ? INFINITY : d;
  }
  return worst;
}

}  // namespace testing_ref
