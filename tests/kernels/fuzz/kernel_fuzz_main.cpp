// The plain driver of the kernel fuzz cases (kernel_fuzz.h): byte strings from a seeded
// splitmix64, so a run is deterministic and any case can be replayed alone:
//   longattn_kernel_fuzz_<level> --iterations N --seed S [--first I] [--kernel NAME]
// runs cases I .. I+N-1 of seed S (case i depends on (S, i) only) and prints one summary line.
// A violated invariant prints the case and aborts; ASan/UBSan stop on their own findings.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "fuzz/kernel_fuzz.h"
#include "kernels/common/random.h"

int main(int argc, char** argv) {
  int64_t iterations = 1000, first = 0;
  uint64_t seed = 1;
  int only = -1;  // a kernel to force (the first byte), or -1
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const char* val = i + 1 < argc ? argv[i + 1] : nullptr;
    if (a == "--iterations" && val) iterations = std::atoll(argv[++i]);
    else if (a == "--seed" && val) seed = std::strtoull(argv[++i], nullptr, 0);
    else if (a == "--first" && val) first = std::atoll(argv[++i]);
    else if (a == "--kernel" && val) {
      const std::string name = argv[++i];
      for (int k = 0; k < kernel_fuzz::kKernelCount; ++k)
        if (name == kernel_fuzz::kernel_name(k)) only = k;
      if (only < 0) {
        std::fprintf(stderr, "unknown kernel '%s'\n", name.c_str());
        return 2;
      }
    } else {
      std::fprintf(stderr, "usage: %s [--iterations N] [--seed S] [--first I] [--kernel NAME]\n", argv[0]);
      return 2;
    }
  }
  const auto start = std::chrono::steady_clock::now();
  std::vector<uint8_t> bytes;
  for (int64_t it = first; it < first + iterations; ++it) {
    // Case `it` of `seed`: its own stream, so --first replays it without the cases before.
    longattn::kernels::SplitMix64 rng{longattn::kernels::splitmix64_mix(seed) ^ longattn::kernels::splitmix64_mix(uint64_t(it) + 1)};
    bytes.resize(32 + rng.next() % 96);  // more than any case decodes: the tail is unused
    for (auto& b : bytes) b = uint8_t(rng.next());
    if (only >= 0) bytes[0] = uint8_t(only);
    char origin[160];
    std::snprintf(origin, sizeof origin, "%s --seed %llu --first %lld --iterations 1", argv[0],
                  (unsigned long long)seed, (long long)it);
    kernel_fuzz::set_origin(origin);
    kernel_fuzz::run_one(bytes.data(), bytes.size());
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const kernel_fuzz::Stats& st = kernel_fuzz::stats();
  std::printf("kernel fuzz: %lld cases (seed %llu, first %lld) in %.1f s; per kernel cases/finite-checked/reference/backward:",
              (long long)iterations, (unsigned long long)seed, (long long)first, secs);
  for (int k = 0; k < kernel_fuzz::kKernelCount; ++k)
    std::printf(" %s %lld/%lld/%lld/%lld", kernel_fuzz::kernel_name(k), (long long)st.cases[k],
                (long long)st.finite_checked[k], (long long)st.reference_checked[k], (long long)st.backward[k]);
  std::printf("\n");
  return 0;
}
