// The Toeplitz operators, Luo's RPE attention and the FastRPB module as a C++ user calls them.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "longattn/ops.h"
#include "nn/fast_rpb.h"

namespace {

torch::Tensor dense_toeplitz(const torch::Tensor& c, int64_t N, bool causal) {
  auto i = torch::arange(N);
  auto T = c.index_select(1, (i.unsqueeze(0) - i.unsqueeze(1) + (N - 1)).reshape(-1)).reshape({c.size(0), N, N});
  return causal ? T * torch::ones({N, N}, c.options()).tril() : T;
}

}  // namespace

TEST(ToeplitzCpp, MatmulAndGradientsMatchDense) {
  torch::manual_seed(0);
  auto opts = torch::TensorOptions().dtype(torch::kFloat64);
  const int64_t H = 3, N = 10;
  for (bool causal : {false, true}) {
    auto c = torch::randn({H, 2 * N - 1}, opts).requires_grad_();
    auto x = torch::randn({2, H, N, 4}, opts).requires_grad_();
    auto y = longattn::toeplitz_matmul(c, x, causal);
    auto ref = torch::matmul(dense_toeplitz(c, N, causal).unsqueeze(0), x);
    EXPECT_TRUE(torch::allclose(y, ref, 1e-10, 1e-12));
    auto g = torch::randn_like(y);
    auto grads = torch::autograd::grad({y}, {c, x}, {g});
    auto rgrads = torch::autograd::grad({ref}, {c, x}, {g});
    for (int i = 0; i < 2; ++i) EXPECT_TRUE(torch::allclose(grads[i], rgrads[i], 1e-9, 1e-11));
  }
}

TEST(ToeplitzCpp, TwoDimensionalAndBadShape) {
  auto x = torch::randn({1, 2, 6, 3});
  auto y = longattn::toeplitz_matmul_2d(torch::randn({2, 3}), torch::randn({2, 5}), x, 2, 3);
  EXPECT_EQ(y.sizes(), x.sizes());
  try {
    longattn::toeplitz_matmul(torch::randn({2, 10}), x);
    FAIL() << "expected an error";
  } catch (const c10::Error& e) {
    std::string msg = e.what_without_backtrace();
    EXPECT_NE(msg.find("coeffs must have shape [H, 2N-1] = [2, 11], got [2, 10]"), std::string::npos) << msg;
  }
}

TEST(ToeplitzCpp, KernelizedRpeAndFastRpbModule) {
  torch::manual_seed(1);
  auto fq = torch::rand({1, 2, 12, 4}) + 0.1, fk = torch::rand({1, 2, 12, 4}) + 0.1;
  auto v = torch::randn({1, 2, 12, 3});
  auto b = torch::zeros({2, 23});
  // b = 0: plain linear attention with these features.
  auto z = longattn::kernelized_rpe_attention(fq, fk, v, b);
  auto S = torch::matmul(fq, fk.transpose(-1, -2));
  EXPECT_TRUE(torch::allclose(z, torch::matmul(S, v) / S.sum(-1, true), 1e-4, 1e-5));

  longattn::nn::FastRPBOptions o;
  o.heads = 2, o.max_len = 16, o.kind = "symmetric", o.causal = true;
  longattn::nn::FastRPB rpb(o);
  auto out = rpb->forward(v);
  auto c = rpb->coefficients(12);
  EXPECT_TRUE(torch::allclose(out, torch::matmul(dense_toeplitz(c, 12, true).unsqueeze(0), v), 1e-4, 1e-5));
  out.sum().backward();
  EXPECT_TRUE(rpb->weights.grad().defined());
}
