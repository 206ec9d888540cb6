// kernelized_attention and random_features as a C++ user calls them (<longattn/ops.h>).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "longattn/ops.h"

TEST(CppApi, KernelizedAttentionMatchesElu1Composite) {
  torch::manual_seed(0);
  auto opts = torch::TensorOptions().dtype(torch::kFloat64);
  auto q = torch::randn({2, 3, 9, 4}, opts).requires_grad_();
  auto k = torch::randn({2, 3, 9, 4}, opts).requires_grad_();
  auto v = torch::randn({2, 3, 9, 5}, opts).requires_grad_();
  longattn::KernelizedAttentionOptions o;
  o.causal = true;
  o.eps = 0;
  auto out = longattn::kernelized_attention(q, k, v, "elu", o);
  auto w = torch::matmul(torch::elu(q) + 1, (torch::elu(k) + 1).transpose(-1, -2));
  w = w.masked_fill(torch::ones({9, 9}, torch::kBool).triu(1), 0.0);
  auto ref = torch::matmul(w, v) / w.sum(-1, true);
  EXPECT_TRUE(torch::allclose(out, ref, 1e-10, 1e-12));
  auto g = torch::randn_like(out);
  auto grads = torch::autograd::grad({out}, {q, k, v}, {g});
  auto ref_grads = torch::autograd::grad({ref}, {q, k, v}, {g});
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(torch::allclose(grads[i], ref_grads[i], 1e-9, 1e-11));
}

TEST(CppApi, FavorWithRandomFeaturesAndUnknownMap) {
  longattn::RandomFeaturesOptions ro;
  ro.heads = 2;
  auto w = longattn::random_features(16, 4, 42, ro);
  EXPECT_EQ(w.sizes(), (std::vector<int64_t>{2, 16, 4}));
  EXPECT_TRUE(torch::equal(w, longattn::random_features(16, 4, 42, ro)));
  auto q = torch::randn({1, 2, 5, 4});
  longattn::KernelizedAttentionOptions o;
  o.projection = w;
  auto out = longattn::kernelized_attention(q, q, q, "favor", o);
  EXPECT_TRUE(torch::isfinite(out).all().item<bool>());
  try {
    longattn::kernelized_attention(q, q, q, "cosine");
    FAIL() << "expected an error";
  } catch (const c10::Error& e) {
    std::string msg = e.what_without_backtrace();
    EXPECT_NE(msg.find("unknown feature_map 'cosine'; known: 'elu', 'relu', 'sikf', 'favor'"),
              std::string::npos)
        << msg;
  }
}
