// The fuzz harness of the kernels layer (kernel_fuzz.h): decodes a case's kernel and type and
// runs it; the cases are in cases_*.cpp, their shared helpers in kernel_fuzz_common.h. Compiled
// once per instruction-set level, like the kernel tests, and linked to that level's objects, so
// each level's code is fuzzed (and the FFT, internal to the levels, can be called directly).
//
// Every buffer is allocated to exactly its extent (the last element of its view is the last of
// the allocation), so ASan sees any read or write outside it; the gaps a strided view leaves
// between rows and heads are filled with a marker and must hold it after the call. Markers are
// NaNs with their own payloads: one for the padding of inputs (a kernel that reads it and lets
// it reach an output is caught by its payload) and one for outputs (an element still holding it
// was never written, though the headers promise every element).
#include "fuzz/kernel_fuzz_common.h"

namespace kernel_fuzz {
namespace {

template <class T>
void run_kernel(int kernel, Bytes& in, uint64_t seed, Stats& st) {
  switch (kernel) {
    case kSoftmax: return softmax_case<T>(in, seed, st);
    case kKernelized: return kernelized_case<T>(in, seed, st);
    case kFeatureMap: return feature_map_case<T>(in, seed, st);
    case kKernelizedRpe: return kernelized_rpe_case<T>(in, seed, st);
    case kToeplitz: return toeplitz_case<T>(in, seed, st);
    case kToeplitz2d: return toeplitz2d_case<T>(in, seed, st);
    case kYosoLsh: return yoso_lsh_case<T>(in, seed, st);
    case kYosoExpectation: return yoso_expectation_case<T>(in, seed, st);
    case kShatter: return shatter_case<T>(in, seed, st);
    case kDropout: return dropout_case<T>(in, seed, st);
    case kFft: return fft_case<T>(in, seed, st);
  }
}

}  // namespace

const char* kernel_name(int kernel) {
  static const char* const kNames[] = {"softmax", "kernelized", "feature_map", "kernelized_rpe",
                                       "toeplitz", "toeplitz2d", "yoso_lsh", "yoso_expectation",
                                       "shatter", "dropout", "fft"};
  return kernel >= 0 && kernel < kKernelCount ? kNames[kernel] : "?";
}

Stats& stats() {
  static Stats s;
  return s;
}

void set_origin(const char* origin) { g_origin = origin; }

int run_one(const uint8_t* data, size_t size) {
  Bytes in(data, size);
  g_case.clear();
  const int kernel = in.u8() % kKernelCount;
  const bool dbl = in.u8() & 1;
  // The values' seed: from the bytes, so a case is a function of its bytes alone.
  const uint64_t seed = in.u64();
  Stats& st = stats();
  ++st.cases[kernel];
  if (dbl)
    run_kernel<double>(kernel, in, seed, st);
  else
    run_kernel<float>(kernel, in, seed, st);
  return kernel;
}

}  // namespace kernel_fuzz
