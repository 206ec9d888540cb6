// Dropout with a counter-based mask (kernels/dropout/dropout.h): the mask is a pure function of
// (seed, element index), so nothing is stored for the backward and the result does not depend
// on the thread count. The same operator as torch.ops.longattn.dropout.
#pragma once
#include <torch/types.h>

#include <string>

namespace longattn {

// x * keep / (1 - p) with P(drop) = p rounded to a multiple of 2^-16 (the scale uses the
// rounded value, so E[y] = x exactly). Gradient for x (the same mask). Always applies: a module
// decides whether it is training (longattn::nn::Dropout). path: "fused" (the CPU kernel) or
// "reference" (ATen integer operations: the same mask bits, on any device; tensors off the CPU
// take it whatever path says).
at::Tensor dropout(const at::Tensor& x, double p, int64_t seed, const std::string& path = "fused");

}  // namespace longattn
