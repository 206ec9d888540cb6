// The kernels' one random generator: splitmix64 (Steele, Lea, Flood 2014), a fast generator with
// good statistics, and normals by Box–Muller written out rather than the standard library's
// distributions, so every draw is a function of the seed alone: the same bits on every
// platform, instruction-set level and thread count (integer arithmetic, and floating point
// with no a*b+c a compiler could fuse differently per level).
#pragma once
#include <cmath>
#include <cstdint>

namespace longattn::kernels {

constexpr uint64_t kGoldenGamma = 0x9E3779B97F4A7C15ull;

// The splitmix64 output function: a bijective mix of 64 bits.
inline uint64_t splitmix64_mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

struct SplitMix64 {
  uint64_t state;
  uint64_t next() { return splitmix64_mix(state += kGoldenGamma); }
  double uniform() { return double((next() >> 11) + 1) * 0x1.0p-53; }  // in (0, 1]
};

// Standard normals, two per Box–Muller step.
struct NormalStream {
  SplitMix64 rng;
  bool has_spare = false;
  double spare = 0;
  double next() {
    if (has_spare) {
      has_spare = false;
      return spare;
    }
    const double r = std::sqrt(-2.0 * std::log(rng.uniform()));
    const double t = 2.0 * M_PI * rng.uniform();
    spare = r * std::sin(t);
    has_spare = true;
    return r * std::cos(t);
  }
};

}  // namespace longattn::kernels
