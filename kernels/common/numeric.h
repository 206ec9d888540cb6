// Small numeric helpers shared by the kernels.
#pragma once
#include <cstdint>
#include <limits>

namespace longattn::kernels {

// -inf of T: the logit of a masked or forbidden key, the running maximum before any key.
template <class T>
constexpr T neg_inf() {
  return -std::numeric_limits<T>::infinity();
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace longattn::kernels
