#include "bench/memory.h"

#include <dlfcn.h>
#include <malloc.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>

namespace longattn::bench {
namespace {

int64_t status_field_kib(const char* field) {
  std::ifstream f("/proc/self/status");
  std::string line;
  const size_t n = std::strlen(field);
  while (std::getline(f, line))
    if (line.compare(0, n, field) == 0) return std::stoll(line.substr(n + 1));
  return -1;
}

}  // namespace

void memory_tracking_init() {
  // glibc (when the tool is built without tcmalloc): a fixed threshold also stops glibc from
  // raising it dynamically after frees.
  mallopt(M_MMAP_THRESHOLD, 256 * 1024);
  mallopt(M_TRIM_THRESHOLD, 1024 * 1024);
}

int64_t resident_bytes() { return status_field_kib("VmRSS:") * 1024; }
int64_t peak_bytes() { return status_field_kib("VmHWM:") * 1024; }

bool peak_reset_supported() {
  FILE* f = std::fopen("/proc/self/clear_refs", "w");
  if (!f) return false;
  std::fclose(f);
  return true;
}

void reset_peak() {
  malloc_trim(0);
  // The tool links tcmalloc (apps/CMakeLists.txt), which keeps freed pages resident: without
  // handing them back here, an operator served from that cache would show no growth at all.
  using Release = void (*)();
  static const auto release = reinterpret_cast<Release>(dlsym(RTLD_DEFAULT, "MallocExtension_ReleaseFreeMemory"));
  if (release) release();
  if (FILE* f = std::fopen("/proc/self/clear_refs", "w")) {
    std::fputs("5", f);
    std::fclose(f);
  }
}

}  // namespace longattn::bench
