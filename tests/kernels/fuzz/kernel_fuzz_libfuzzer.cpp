// libFuzzer entry point of the kernel fuzz cases (kernel_fuzz.h); built with clang and
// -DLONGATTN_LIBFUZZER=ON only (docs/fuzzing.md).
#include <cstddef>
#include <cstdint>

#include "fuzz/kernel_fuzz.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  kernel_fuzz::run_one(data, size);
  return 0;
}
