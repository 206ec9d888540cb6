// The operators as a C++ user calls them: <longattn/ops.h>, at::Tensor in and out, autograd.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "longattn/ops.h"

TEST(CppApi, SoftmaxAttentionMatchesComposite) {
  torch::manual_seed(0);
  auto opts = torch::TensorOptions().dtype(torch::kFloat64);
  auto q = torch::randn({2, 3, 9, 4}, opts).requires_grad_();
  auto k = torch::randn({2, 3, 9, 4}, opts).requires_grad_();
  auto v = torch::randn({2, 3, 9, 5}, opts).requires_grad_();
  longattn::SoftmaxAttentionOptions o;
  o.causal = true;
  auto out = longattn::softmax_attention(q, k, v, o);
  auto s = torch::matmul(q, k.transpose(-1, -2)) / 2.0;
  s = s.masked_fill(torch::ones({9, 9}, torch::kBool).triu(1), -INFINITY);
  auto ref = torch::matmul(torch::softmax(s, -1), v);
  EXPECT_TRUE(torch::allclose(out, ref, 1e-10, 1e-12));

  auto g = torch::randn_like(out);
  auto grads = torch::autograd::grad({out}, {q, k, v}, {g});
  auto ref_grads = torch::autograd::grad({ref}, {q, k, v}, {g});
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(torch::allclose(grads[i], ref_grads[i], 1e-9, 1e-11));
}

TEST(CppApi, BadShapeRaisesWithExpectedAndGiven) {
  auto q = torch::randn({1, 2, 3, 4});
  try {
    longattn::softmax_attention(q, torch::randn({1, 2, 3, 5}), torch::randn({1, 2, 3, 4}));
    FAIL() << "expected an error";
  } catch (const c10::Error& e) {
    std::string msg = e.what_without_backtrace();
    EXPECT_NE(msg.find("k must have shape [B, H, Nk, D] = [1, 2, *, 4], got [1, 2, 3, 5]"),
              std::string::npos)
        << msg;
  }
}

TEST(CppApi, DropoutGradientIsTheForwardMask) {
  auto x = torch::randn({4, 257}, torch::kFloat64).requires_grad_();
  auto y = longattn::dropout(x, 0.25, 17);
  auto g = torch::autograd::grad({y.sum()}, {x})[0];
  // Where kept, y = x * scale and the gradient is scale; where dropped, both are zero.
  auto kept = y.ne(0);
  EXPECT_TRUE(torch::allclose(y.masked_select(kept), (x * g).masked_select(kept)));
  EXPECT_TRUE(g.masked_select(kept.logical_not()).eq(0).all().item<bool>());
  EXPECT_TRUE(torch::equal(longattn::dropout(x, 0.25, 17), y));
  try {
    longattn::dropout(x, -0.5, 0);
    FAIL() << "expected an error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what_without_backtrace()).find("longattn.dropout: p must be in [0, 1 - 2^-16]"),
              std::string::npos)
        << e.what_without_backtrace();
  }
}
