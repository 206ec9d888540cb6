// What this CPU offers and which instruction-set level the kernels run at, for `longattn info`
// and the kernels' run-time dispatch (kernels/dispatch).
#pragma once
#include <string>
#include <vector>

namespace longattn::kernels {

struct CpuFeatures {
  bool avx2 = false, fma = false, avx512f = false;
  bool x86_64_v3 = false;  // AVX2, FMA, F16C, BMI1/2, LZCNT, MOVBE: what the avx2 level uses
  bool x86_64_v4 = false;  // + AVX-512 F/BW/CD/DQ/VL: what the avx512 level uses
  bool avx512_bf16 = false, amx_bf16 = false;
  bool neon = false;  // aarch64 Advanced SIMD (always there on aarch64)
};

CpuFeatures cpu_features();  // cpuid (x86; the OS's register support included) or the target

// The instruction-set levels each hot kernel is compiled for. One binary carries several and
// picks one at run time (the best the CPU runs, unless forced): never the build machine's.
enum class Isa : int { portable = 0, neon = 1, avx2 = 2, avx512 = 3 };

const char* isa_name(Isa level);                        // "portable", "neon", "avx2", "avx512"
bool isa_from_name(const std::string& name, Isa* out);  // the inverse; false if unknown
std::vector<Isa> isa_compiled();                        // levels in this build, lowest first
bool isa_supported(Isa level);                          // compiled in and the CPU runs it
Isa isa_best();                                         // the best supported level

// The level the kernels run at: LONGATTN_ISA from the environment at first use (an unknown or
// unsupported name throws std::invalid_argument naming it and the choices), else the best.
Isa isa_active();
// Forces a level for the whole process (tests, benchmarks); throws std::invalid_argument for a
// level that is not supported here. set_isa(isa_best()) undoes a forcing.
void set_isa(Isa level);

std::string build_isa();  // e.g. "avx512 (of portable, avx2, avx512)": active level and compiled ones
int max_threads();        // OpenMP's default thread count

}  // namespace longattn::kernels
