// Exit status 0 when this build has the named instruction-set level and the CPU runs it, 1 if
// not (compiled for the baseline, so it runs anywhere). Used by CTest to skip a level's tests.
#include <cstdio>
#include <string>

#include "kernels/common/cpu_features.h"

int main(int argc, char** argv) {
  using namespace longattn::kernels;
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s LEVEL\n", argv[0]);
    return 2;
  }
  Isa level;
  if (!isa_from_name(argv[1], &level)) {
    std::fprintf(stderr, "unknown level %s\n", argv[1]);
    return 2;
  }
  if (isa_supported(level)) return 0;
  std::printf("level %s is not supported on this CPU: skipped\n", argv[1]);
  return 1;
}
