// Fuzz harness of the kernels layer (raw pointers + params structs, no torch): one case per byte
// string, decoded into a kernel, its shapes, strides, options and input values; run under
// AddressSanitizer/UndefinedBehaviorSanitizer by the drivers (kernel_fuzz_main.cpp: a seeded
// generator, a ctest; kernel_fuzz_libfuzzer.cpp: libFuzzer). docs/fuzzing.md lists the invariants.
#pragma once
#include <cstddef>
#include <cstdint>

namespace kernel_fuzz {

// The kernels a case can pick (its first byte, modulo kKernelCount).
enum Kernel : int {
  kSoftmax,
  kKernelized,
  kFeatureMap,
  kKernelizedRpe,
  kToeplitz,
  kToeplitz2d,
  kYosoLsh,
  kYosoExpectation,
  kShatter,
  kDropout,
  kFft,
  kKernelCount
};

const char* kernel_name(int kernel);

// What the cases run so far checked, per kernel (for the drivers' summary).
struct Stats {
  int64_t cases[kKernelCount] = {};
  int64_t finite_checked[kKernelCount] = {};    // cases whose inputs were finite and moderate
  int64_t reference_checked[kKernelCount] = {};  // cases compared with a reference
  int64_t backward[kKernelCount] = {};          // cases that also ran the backward
};
Stats& stats();

// Text prefixed to every failure message (the drivers name the seed and iteration there).
void set_origin(const char* origin);

// Decodes one case from the bytes (missing bytes read as 0), runs it and checks its invariants.
// A violated invariant prints the case and the violation to stderr and aborts (a crash for
// libFuzzer; ASan/UBSan report their own findings). Returns the kernel that ran.
int run_one(const uint8_t* data, size_t size);

}  // namespace kernel_fuzz
