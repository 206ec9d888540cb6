// Compiled once, for the baseline of the target (never per level): it decides which level runs.
#include "kernels/common/cpu_features.h"

#include <omp.h>
#if (defined(__x86_64__) || defined(__i386__)) && defined(__clang__)
#include <cpuid.h>
#endif

#include <atomic>
#include <cstdlib>
#include <stdexcept>

namespace longattn::kernels {

CpuFeatures cpu_features() {
  CpuFeatures f;
#if defined(__x86_64__) || defined(__i386__)
  // libgcc's checks include the OS's support (XCR0) for the wider registers.
  __builtin_cpu_init();
  f.avx2 = __builtin_cpu_supports("avx2");
  f.fma = __builtin_cpu_supports("fma");
  f.avx512f = __builtin_cpu_supports("avx512f");
#if defined(__clang__) && __clang_major__ < 16
  // Older clang (the libFuzzer build, docs/fuzzing.md) names neither the x86-64-v3/v4 levels
  // nor amx-bf16 here: the levels from their features (the AVX ones with the OS's register
  // support, as above), F16C, MOVBE and LZCNT read by cpuid; AMX-BF16 only informs `longattn info`.
  unsigned a = 0, b = 0, c = 0, d = 0;
  __get_cpuid(1, &a, &b, &c, &d);
  const bool f16c = c & (1u << 29), movbe = c & (1u << 22);
  unsigned ext_c = 0;
  if (__get_cpuid(0x80000001u, &a, &b, &ext_c, &d) == 0) ext_c = 0;
  const bool lzcnt = ext_c & (1u << 5);
  f.x86_64_v3 = f.avx2 && f.fma && __builtin_cpu_supports("bmi") && __builtin_cpu_supports("bmi2") && f16c &&
                movbe && lzcnt;
  f.x86_64_v4 = f.x86_64_v3 && f.avx512f && __builtin_cpu_supports("avx512bw") &&
                __builtin_cpu_supports("avx512cd") && __builtin_cpu_supports("avx512dq") &&
                __builtin_cpu_supports("avx512vl");
  f.avx512_bf16 = __builtin_cpu_supports("avx512bf16");
  f.amx_bf16 = false;
#else
  f.x86_64_v3 = __builtin_cpu_supports("x86-64-v3");
  f.x86_64_v4 = __builtin_cpu_supports("x86-64-v4");
  f.avx512_bf16 = __builtin_cpu_supports("avx512bf16");
  f.amx_bf16 = __builtin_cpu_supports("amx-bf16");
#endif
#elif defined(__aarch64__)
  f.neon = true;
#endif
  return f;
}

const char* isa_name(Isa level) {
  switch (level) {
    case Isa::portable: return "portable";
    case Isa::neon: return "neon";
    case Isa::avx2: return "avx2";
    case Isa::avx512: return "avx512";
  }
  return "?";
}

bool isa_from_name(const std::string& name, Isa* out) {
  for (Isa l : {Isa::portable, Isa::neon, Isa::avx2, Isa::avx512})
    if (name == isa_name(l)) {
      *out = l;
      return true;
    }
  return false;
}

std::vector<Isa> isa_compiled() {
  // The build defines these for the levels it compiled (kernels/CMakeLists.txt).
  std::vector<Isa> v;
#if defined(LONGATTN_HAVE_ISA_portable)
  v.push_back(Isa::portable);
#endif
#if defined(LONGATTN_HAVE_ISA_neon)
  v.push_back(Isa::neon);
#endif
#if defined(LONGATTN_HAVE_ISA_avx2)
  v.push_back(Isa::avx2);
#endif
#if defined(LONGATTN_HAVE_ISA_avx512)
  v.push_back(Isa::avx512);
#endif
  return v;
}

namespace {
bool cpu_runs(Isa level) {
  const CpuFeatures f = cpu_features();
  switch (level) {
    case Isa::portable: return true;
    case Isa::neon: return f.neon;
    case Isa::avx2: return f.x86_64_v3;
    case Isa::avx512: return f.x86_64_v4;
  }
  return false;
}

std::string supported_list() {
  std::string s;
  for (Isa l : isa_compiled())
    if (cpu_runs(l)) s += (s.empty() ? "" : ", ") + std::string(isa_name(l));
  return s;
}

Isa checked(const std::string& name, const char* origin) {
  Isa l;
  if (!isa_from_name(name, &l))
    throw std::invalid_argument(std::string(origin) + ": unknown instruction-set level '" + name +
                                "'; expected one of: " + supported_list());
  if (!isa_supported(l))
    throw std::invalid_argument(std::string(origin) + " = " + name +
                                ": this level is not supported here (compiled in and run by this "
                                "CPU: " + supported_list() + ")");
  return l;
}

// -1: not decided yet (the environment is read at first use).
std::atomic<int>& active_level() {
  static std::atomic<int> level{-1};
  return level;
}
}  // namespace

bool isa_supported(Isa level) {
  for (Isa l : isa_compiled())
    if (l == level) return cpu_runs(level);
  return false;
}

Isa isa_best() {
  Isa best = Isa::portable;
  for (Isa l : isa_compiled())
    if (cpu_runs(l)) best = l;  // listed lowest first
  return best;
}

Isa isa_active() {
  int level = active_level().load(std::memory_order_acquire);
  if (level >= 0) return static_cast<Isa>(level);
  const char* env = std::getenv("LONGATTN_ISA");
  const Isa chosen = env && *env ? checked(env, "LONGATTN_ISA") : isa_best();
  int expected = -1;  // a concurrent first use or set_isa may have decided meanwhile
  active_level().compare_exchange_strong(expected, static_cast<int>(chosen));
  return static_cast<Isa>(active_level().load(std::memory_order_acquire));
}

void set_isa(Isa level) {
  checked(isa_name(level), "set_isa");
  active_level().store(static_cast<int>(level), std::memory_order_release);
}

std::string build_isa() {
  std::string compiled;
  for (Isa l : isa_compiled()) compiled += (compiled.empty() ? "" : ", ") + std::string(isa_name(l));
  return std::string(isa_name(isa_active())) + " (compiled: " + compiled + ")";
}

int max_threads() { return omp_get_max_threads(); }

}  // namespace longattn::kernels
