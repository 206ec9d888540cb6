// Small, portable draws on top of std::mt19937_64.
//
// The standard distributions (uniform_int_distribution, ...) are implementation-defined, so the same
// seed could give different data with another standard library. These helpers are fixed formulas,
// so a seed names the same dataset everywhere.
#pragma once

#include <cstdint>
#include <random>

namespace longattn::data {

using Rng = std::mt19937_64;

// Uniform in [0, 1) with 53 random bits.
inline double uniform01(Rng& rng) { return double(rng() >> 11) * (1.0 / 9007199254740992.0); }

// Uniform integer in [lo, hi] (inclusive, as Python's random.randint). The modulo bias is below 2^-50
// for the small ranges used here.
inline int64_t randint(Rng& rng, int64_t lo, int64_t hi) { return lo + int64_t(rng() % uint64_t(hi - lo + 1)); }

inline double uniform(Rng& rng, double lo, double hi) { return lo + (hi - lo) * uniform01(rng); }

}  // namespace longattn::data
