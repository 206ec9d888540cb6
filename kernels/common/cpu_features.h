// What this CPU and this build can do, for `longattn info` and kernel dispatch.
#pragma once
#include <string>

namespace longattn::kernels {

struct CpuFeatures {
  bool avx2 = false, fma = false, avx512f = false;
};

CpuFeatures cpu_features();     // what the CPU offers (cpuid)
std::string build_isa();        // what the kernels were compiled for (e.g. "AVX-512")
int max_threads();              // OpenMP's default thread count

}  // namespace longattn::kernels
