// `longattn info`: what this build is and what it runs on.
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/Context.h>
#include <torch/cuda.h>
#include <torch/version.h>

#include <iostream>
#include <sstream>

#include "command.h"
#include "flags.h"
#include "apps/train/distributed.h"
#include "kernels/common/cpu_features.h"

namespace longattn::app {
namespace {

std::string build_info() {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("longattn::_build_info", "")
                       .typed<std::string()>();
  return op.call();
}

int run_info(const Args& args) {
  Flags flags("info", {{"threads", "thread count to report and use, >= 1 (default: torch's)"}});
  if (wants_help(args)) {
    std::cout << "usage: longattn info [--threads N]\n" << flags.help();
    return 0;
  }
  flags.parse(args);
  if (flags.has("threads")) at::set_num_threads(static_cast<int>(flags.get_int("threads", 1, 1, 1024)));
  auto f = kernels::cpu_features();
  std::istringstream lines(build_info());
  std::cout << "longattn\n";
  for (std::string line; std::getline(lines, line);) {
    auto eq = line.find('=');
    std::cout << "  " << line.substr(0, eq) << ": " << line.substr(eq + 1) << "\n";
  }
  std::cout << "  torch: " << TORCH_VERSION << "\n"
            << "  threads: " << at::get_num_threads() << " (torch intra-op; longattn kernels use the same)\n"
            << "  allocator: " << LONGATTN_ALLOCATOR << " (this tool's process)\n"
            << "  cpu: AVX2 " << (f.avx2 ? "yes" : "no") << ", FMA " << (f.fma ? "yes" : "no")
            << ", AVX-512 " << (f.avx512f ? "yes" : "no") << ", AVX-512 BF16 "
            << (f.avx512_bf16 ? "yes" : "no") << ", AMX-BF16 " << (f.amx_bf16 ? "yes" : "no") << "\n";
  std::string compiled, supported;
  for (kernels::Isa l : kernels::isa_compiled()) {
    compiled += (compiled.empty() ? "" : ", ") + std::string(kernels::isa_name(l));
    if (kernels::isa_supported(l)) supported += (supported.empty() ? "" : ", ") + std::string(kernels::isa_name(l));
  }
  std::cout << "  instruction-set levels compiled: " << compiled << "\n"
            << "  levels this CPU runs: " << supported << " (LONGATTN_ISA=<level> forces one)\n"
            << "  level in use: " << kernels::isa_name(kernels::isa_active())
            << (kernels::isa_active() == kernels::isa_best() ? " (the best supported)" : " (forced)")
            << "\n";
  std::cout << "  distributed (c10d): Gloo " << (train::distributed_gloo_built() ? "yes" : "no (no Gloo headers at build time)")
            << ", NCCL " << (train::distributed_nccl_built() ? "yes" : "no (CPU-only operators)")
            << " (`longattn train --nproc N`, or RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT)\n";
  const auto cuda = torch::cuda::is_available() ? torch::cuda::device_count() : 0;
  std::cout << "  devices torch sees: cpu" << (cuda > 0 ? ", cuda x " + std::to_string(cuda) : "")
            << (at::globalContext().hasXPU() ? ", xpu" : "") << (at::globalContext().hasMPS() ? ", mps" : "")
            << " (`longattn train --device`; operators on a non-CPU device take the reference path)\n";
  return 0;
}

RegisterCommand reg({"info", "version, torch, threads, CPU features, kernels, BLAS and FFT backends",
                     run_info});

}  // namespace
}  // namespace longattn::app
