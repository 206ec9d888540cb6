// The reference path of dropout (ops/common.h, takes_reference_path): the same signature and
// output as the CPU kernel of `_dropout_apply`, the same keep bits, with ATen integer operations.
#pragma once
#include <torch/types.h>

namespace longattn::ops::reference {

at::Tensor dropout_apply(const at::Tensor& x, double p, int64_t seed);

}  // namespace longattn::ops::reference
