// Dropout with a counter-based mask (kernels/dropout/dropout.h): the mask is a pure function of
// (seed, element index), so nothing is stored for the backward and the result does not depend
// on the thread count. The same operator as torch.ops.longattn.dropout.
#pragma once
#include <torch/types.h>

namespace longattn {

// x * keep / (1 - p) with P(drop) = p rounded to a multiple of 2^-16 (the scale uses the
// rounded value, so E[y] = x exactly). Gradient for x (the same mask). Always applies: a module
// decides whether it is training (longattn::nn::Dropout).
at::Tensor dropout(const at::Tensor& x, double p, int64_t seed);

}  // namespace longattn
