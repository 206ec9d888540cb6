// Masked rows take part in nothing, whatever they hold.
#pragma once
#include <torch/types.h>

#include <vector>

namespace longattn::ops {

// x with the rows of masked positions (mask [B, N] bool, False = masked; N in dimension seq_dim
// of x, B in dimension 0) set to 0. Why: a masked key takes part in nothing whatever its values,
// but the kernels multiply its zero weight into its row in a GEMM, and 0 * NaN (or inf) is NaN.
// Returns x itself without a mask; differentiable (masked rows get zero gradient).
inline at::Tensor zero_masked_rows(const at::Tensor& x, const c10::optional<at::Tensor>& mask, int64_t seq_dim) {
  // No data-dependent shortcut (such as skipping an all-true mask): it would stop torch.compile.
  if (!mask || !mask->defined() || x.numel() == 0) return x;
  std::vector<int64_t> shape(size_t(x.dim()), 1);
  shape[0] = mask->size(0);
  shape[size_t(seq_dim)] = mask->size(1);
  return x.masked_fill(mask->logical_not().view(shape), 0);
}

}  // namespace longattn::ops
