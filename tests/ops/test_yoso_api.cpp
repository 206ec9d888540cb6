// yoso_attention / yoso_expectation as a C++ user calls them: <longattn/ops.h>, autograd.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "longattn/ops.h"

TEST(CppApiYoso, LshIsSeededAndItsExactBackwardIsTheExpectationSurrogate) {
  torch::manual_seed(0);
  auto opts = torch::TensorOptions().dtype(torch::kFloat64);
  auto q = torch::randn({2, 3, 17, 8}, opts).requires_grad_();
  auto k = torch::randn({2, 3, 17, 8}, opts).requires_grad_();
  auto v = torch::randn({2, 3, 17, 5}, opts).requires_grad_();
  longattn::YosoOptions o;
  o.hash_bits = 3;
  o.num_hashes = 8;
  o.seed = 42;
  o.backward = "exact";
  auto a = longattn::yoso_attention(q, k, v, o);
  EXPECT_TRUE(torch::equal(a, longattn::yoso_attention(q, k, v, o)));
  longattn::YosoExpectationOptions e;
  e.hash_bits = 3;
  e.backward = "surrogate";
  auto b = longattn::yoso_expectation(q, k, v, e);
  auto g = torch::randn_like(a);
  auto ga = torch::autograd::grad({a}, {q, k, v}, {g});
  auto gb = torch::autograd::grad({b}, {q, k, v}, {g});
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(torch::allclose(ga[i], gb[i], 1e-10, 1e-12));
}

TEST(CppApiYoso, HashBitsOutOfRangeNamesTheLimit) {
  auto q = torch::randn({1, 2, 3, 4});
  longattn::YosoOptions o;
  o.hash_bits = 31;
  o.num_hashes = 4;
  try {
    longattn::yoso_attention(q, q, q, o);
    FAIL() << "expected an error";
  } catch (const c10::Error& e) {
    std::string msg = e.what_without_backtrace();
    EXPECT_NE(msg.find("longattn.yoso_attention: hash_bits must be in [1, 30]"), std::string::npos) << msg;
    EXPECT_NE(msg.find("got 31"), std::string::npos) << msg;
  }
}

#include "nn/yoso.h"

TEST(CppNnYoso, NormalisedRowsEvalDeterministicTrainingFreshAndRegistered) {
  torch::manual_seed(0);
  longattn::nn::YOSOAttention layer(longattn::nn::YOSOAttentionOptions(2, 3).num_hashes(8).seed(5));
  auto q = torch::randn({2, 2, 20, 8}), k = torch::randn({2, 2, 20, 8}), v = torch::randn({2, 2, 20, 8});
  auto mask = torch::ones({2, 20}, torch::kBool);
  mask.index_put_({1, torch::indexing::Slice(15, 20)}, false);
  layer->eval();
  auto a = layer->forward(q, k, v, mask);
  EXPECT_TRUE(torch::equal(a, layer->forward(q, k, v, mask)));
  auto norms = a.norm(2, -1);
  EXPECT_TRUE(torch::allclose(norms.index({0}), torch::ones_like(norms.index({0})), 1e-5, 1e-6));
  EXPECT_TRUE(torch::all(a.index({1, torch::indexing::Slice(), torch::indexing::Slice(15, 20)}) == 0).item<bool>());
  layer->train();
  EXPECT_FALSE(torch::equal(layer->forward(q, k, v, mask), layer->forward(q, k, v, mask)));

  longattn::nn::AttentionSpec spec;
  spec.heads = 2, spec.max_len = 20;
  for (const char* name : {"yoso", "yoso-c", "yoso-e"}) {
    spec.name = name;
    auto core = longattn::nn::make_attention_core(spec);
    core->eval();
    EXPECT_EQ(core->forward(q, k, v, mask).sizes(), v.sizes()) << name;
  }
}
