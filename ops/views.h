// From at::Tensor to the kernels' strided views.
#pragma once
#include <torch/types.h>

#include "kernels/common/tensor_view.h"

namespace longattn::ops {

// A [B, H, N, D] tensor whose last dimension is contiguous (see last_dim_contiguous).
template <class T>
kernels::BHND<T> bhnd(const at::Tensor& t) {
  TORCH_INTERNAL_ASSERT(t.dim() == 4 && (t.stride(3) == 1 || t.size(3) <= 1));
  return kernels::BHND<T>{t.data_ptr<std::remove_const_t<T>>(),
                          t.size(0), t.size(1), t.size(2), t.size(3),
                          t.stride(0), t.stride(1), t.stride(2)};
}

}  // namespace longattn::ops
