// The longattn operator namespace, and build information for `longattn info` and Python.
#include <torch/library.h>

#include <sstream>
#include <string>
#include <vector>

#include "kernels/common/blas.h"
#include "kernels/common/cpu_features.h"
#include "ops/checks.h"

namespace longattn::ops {
namespace {

// Each public operator and the internal operators that compute it. Where each runs is read from
// the dispatcher (which kernels are registered), so `longattn info` reports what is, not a list.
struct OperatorKernels {
  const char* name;
  std::vector<const char*> internal;
};
const std::vector<OperatorKernels>& operator_kernels() {
  static const std::vector<OperatorKernels> ops = {
      {"softmax_attention", {"_softmax_attention_forward", "_softmax_attention_backward"}},
      {"kernelized_attention", {"_kernelized_attention_forward", "_kernelized_attention_backward",
                                "_feature_map_forward", "_feature_map_backward", "_kernelized_rpe_forward",
                                "_kernelized_rpe_backward"}},
      {"kernelized_rpe_attention", {"_kernelized_rpe_forward", "_kernelized_rpe_backward"}},
      {"feature_map", {"_feature_map_forward", "_feature_map_backward"}},
      {"toeplitz_matmul", {"_toeplitz_matmul_forward", "_toeplitz_matmul_backward"}},
      {"toeplitz_matmul_2d", {"_toeplitz_matmul_2d_forward", "_toeplitz_matmul_2d_backward"}},
      {"yoso_attention", {"_yoso_hash", "_yoso_forward", "_yoso_backward_lsh"}},
      {"yoso_expectation", {"_yoso_expectation_forward", "_yoso_expectation_backward"}},
      {"shatter_attention", {"_shatter_attention_forward", "_shatter_attention_backward"}},
      {"dropout", {"_dropout_apply"}},
  };
  return ops;
}

// "CPU fused + reference; other devices: reference" when every internal operator has both a CPU
// kernel and a device-generic (CompositeExplicitAutograd) one; otherwise what is missing.
std::string devices_of(const OperatorKernels& o) {
  bool cpu = true, generic = true;
  for (const char* name : o.internal) {
    auto h = c10::Dispatcher::singleton().findOp({std::string("longattn::") + name, ""});
    if (!h) return "not registered";
    cpu = cpu && h->hasKernelForDispatchKey(c10::DispatchKey::CPU);
    generic = generic && h->hasKernelForDispatchKey(c10::DispatchKey::CompositeExplicitAutograd);
  }
  std::string s = cpu ? "CPU fused kernel" : "CPU: no fused kernel";
  s += generic ? " + reference path; CUDA, XPU, MPS, other devices: reference path" : "; other devices: none";
  return s;
}

std::string build_info() {
  std::ostringstream s;
  s << "version=" << LONGATTN_VERSION << "\n"
    << "kernels=CPU (" << kernels::build_isa() << ")"
#ifdef LONGATTN_WITH_CUDA
    << ", CUDA"
#endif
    << "\n"
    << "blas=" << kernels::blas_backend() << "\n"
    << "fft=longattn built-in (channel-vectorised radix-2/4)\n"
    << "paths=fused (CPU kernels, the default) or reference (ATen operations, any device): keyword "
       "path='reference', or LONGATTN_PATH=reference for every call\n";
  for (const auto& o : operator_kernels()) s << "device." << o.name << "=" << devices_of(o) << "\n";
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
