#include "nn/dropout.h"

#include <stdexcept>
#include <string>

#include "kernels/dropout/dropout.h"
#include "longattn/dropout.h"

namespace longattn::nn {
namespace {
int64_t row_offset = 0;  // DropoutRowOffset; the trainer's thread sets it around its forward
constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ull;  // the kernel's counter step (kernels/dropout)
}  // namespace

DropoutRowOffset::DropoutRowOffset(int64_t first) : previous_(row_offset) { row_offset = first; }
DropoutRowOffset::~DropoutRowOffset() { row_offset = previous_; }

DropoutImpl::DropoutImpl(double p) : p_(p) {
  if (!(p >= 0.0 && p <= kernels::kDropoutMaxP))
    throw std::invalid_argument("Dropout: p must be in [0, 1 - 2^-16] (the mask's resolution), got " +
                                std::to_string(p));
}

torch::Tensor DropoutImpl::forward(const torch::Tensor& x) {
  if (!is_training() || p_ == 0.0) return x;
  // The same draw as the Python twin (longattn.nn.Dropout): one integer below 2^62.
  int64_t seed = torch::randint(0, int64_t(1) << 62, {1}, torch::kLong).item<int64_t>();
  if (row_offset != 0 && x.numel() > 0) {
    // Element i reads counter i / 4 (kernels/dropout/dropout.h): shifting the elements by a multiple
    // of 4 is shifting the seed by that many counters.
    const int64_t per_row = x.numel() / x.size(0);
    if (per_row % 4 != 0)
      throw std::invalid_argument("Dropout: data-parallel masks need a multiple of 4 elements per example, got " +
                                  std::to_string(per_row));
    seed = int64_t(uint64_t(seed) + uint64_t(row_offset * per_row / 4) * kGolden);
  }
  return longattn::dropout(x, p_, seed);
}

}  // namespace longattn::nn
