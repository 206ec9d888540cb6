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
  // Sizes as symbols: under torch.compile they may not be concrete (and an empty x needs no case).
  if (!mask || !mask->defined()) return x;
  std::vector<c10::SymInt> shape(size_t(x.dim()), 1);
  shape[0] = mask->sym_size(0);
  shape[size_t(seq_dim)] = mask->sym_size(1);
  return x.masked_fill(mask->logical_not().view_symint(shape), 0);
}

}  // namespace longattn::ops
