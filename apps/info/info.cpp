// `longattn info`: what this build is and what it runs on.
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
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
  Flags flags("info", {{"threads", "thread count to report and use (default: torch's)"}});
  if (wants_help(args)) {
    std::cout << "usage: longattn info [--threads N]\n" << flags.help();
    return 0;
  }
  flags.parse(args);
  if (flags.has("threads")) at::set_num_threads(static_cast<int>(flags.get_int("threads", 1)));
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
            << ", AVX-512 " << (f.avx512f ? "yes" : "no") << "\n"
            << "  distributed (c10d): Gloo " << (train::distributed_gloo_built() ? "yes" : "no (no Gloo headers at build time)")
            << ", NCCL " << (train::distributed_nccl_built() ? "yes" : "no (CPU-only operators)")
            << " (`longattn train --nproc N`, or RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT)\n";
  return 0;
}

RegisterCommand reg({"info", "version, torch, threads, CPU features, kernels, BLAS and FFT backends",
                     run_info});

}  // namespace
}  // namespace longattn::app
