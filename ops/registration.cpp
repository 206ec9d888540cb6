// The longattn operator namespace, and build information for `longattn info` and Python.
#include <torch/library.h>

#include <sstream>

#include "kernels/common/blas.h"
#include "kernels/common/cpu_features.h"

namespace longattn::ops {
namespace {

std::string build_info() {
  std::ostringstream s;
  s << "version=" << LONGATTN_VERSION << "\n"
    << "kernels=CPU (" << kernels::build_isa() << ")"
#ifdef LONGATTN_WITH_CUDA
    << ", CUDA"
#endif
    << "\n"
    << "blas=" << kernels::blas_backend() << "\n"
    << "fft=longattn built-in (channel-vectorised radix-2/4)\n";
  return s.str();
}

}  // namespace

TORCH_LIBRARY(longattn, m) {
  m.def("_build_info() -> str", build_info);
}

}  // namespace longattn::ops
