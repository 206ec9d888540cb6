#include "bench/registry.h"

namespace longattn::bench {

std::vector<Suite>& suites() {
  static std::vector<Suite> all;
  return all;
}

at::Tensor randn(at::IntArrayRef shape, const Shape& s, bool requires_grad) {
  return at::randn(shape, at::TensorOptions().dtype(s.dtype)).set_requires_grad(requires_grad);
}

double bytes_of(const at::Tensor& t) { return static_cast<double>(t.numel() * t.element_size()); }

namespace {
double g_max_case_bytes = 16.0 * (1ull << 30);
}
double max_case_bytes() { return g_max_case_bytes; }
void set_max_case_bytes(double b) { g_max_case_bytes = b; }

double attention_flops(const Shape& s, int64_t Nq, int64_t Nk, int64_t D) {
  double f = 4.0 * s.B * s.H * double(Nq) * double(Nk) * D;
  return s.causal ? f / 2 : f;
}

void clear_grads(std::initializer_list<at::Tensor> ts) {
  for (auto t : ts)
    if (t.defined()) t.mutable_grad().reset();
}

}  // namespace longattn::bench
