// The longattn operator namespace, and build information for `longattn info` and Python.
#include <torch/library.h>

#include <sstream>

#include "kernels/common/blas.h"
#include "kernels/common/cpu_features.h"
#include "ops/checks.h"

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

// torch.func.vmap reaches an operator through the FuncTorchBatched key; our kernels have no
// batching rule, and without this kernel vmap would decompose the public operator and fail on
// its shape checks ("q must have 4 dimensions, got 3"), which names the wrong cause.
void vmap_unsupported(const c10::OperatorHandle& op, torch::jit::Stack*) {
  const std::string name = op.schema().name();
  fail(name.substr(name.find("::") + 2).c_str(),
       "torch.func.vmap is not supported by longattn's operators; fold the mapped dimension into "
       "the batch dimension B (or loop over it) instead");
}

}  // namespace

TORCH_LIBRARY(longattn, m) {
  m.def("_build_info() -> str", build_info);
}

TORCH_LIBRARY_IMPL(longattn, FuncTorchBatched, m) {
  for (const char* op : {"softmax_attention", "kernelized_attention", "kernelized_rpe_attention",
                         "toeplitz_matmul", "toeplitz_matmul_2d", "shatter_attention",
                         "yoso_attention", "yoso_expectation", "dropout"})
    m.impl(op, torch::CppFunction::makeFromBoxedFunction<&vmap_unsupported>());
}

}  // namespace longattn::ops
