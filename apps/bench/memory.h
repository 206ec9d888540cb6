// Peak memory of a piece of work, from the kernel's accounting of this process.
// Linux only: VmHWM (peak resident set) is reset through /proc/self/clear_refs, and large
// allocations are forced to mmap so that freed memory leaves the resident set at once.
#pragma once
#include <cstdint>

namespace longattn::bench {

void memory_tracking_init();   // call once at start (sets malloc's mmap threshold)
int64_t resident_bytes();      // VmRSS now
void reset_peak();             // VmHWM := VmRSS
int64_t peak_bytes();          // VmHWM since the last reset
bool peak_reset_supported();

}  // namespace longattn::bench
