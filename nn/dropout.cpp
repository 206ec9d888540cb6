#include "nn/dropout.h"

#include <stdexcept>
#include <string>

#include "kernels/dropout/dropout.h"
#include "longattn/dropout.h"

namespace longattn::nn {

DropoutImpl::DropoutImpl(double p) : p_(p) {
  if (!(p >= 0.0 && p <= kernels::kDropoutMaxP))
    throw std::invalid_argument("Dropout: p must be in [0, 1 - 2^-16] (the mask's resolution), got " +
                                std::to_string(p));
}

torch::Tensor DropoutImpl::forward(const torch::Tensor& x) {
  if (!is_training() || p_ == 0.0) return x;
  // The same draw as the Python twin (longattn.nn.Dropout): one integer below 2^62.
  const int64_t seed = torch::randint(0, int64_t(1) << 62, {1}, torch::kLong).item<int64_t>();
  return longattn::dropout(x, p_, seed);
}

}  // namespace longattn::nn
