// A C++ user of an installed longattn: find_package(longattn), link longattn::ops, call an operator.
#include <longattn/ops.h>
#include <torch/torch.h>
#include <iostream>
int main() {
  auto q = torch::randn({1, 2, 16, 8});
  auto out = longattn::softmax_attention(q, q, q);
  std::cout << "ok " << out.sizes() << "\n";
}
