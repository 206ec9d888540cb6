// Shatter as a C++ user calls it: longattn::shatter_attention and longattn::nn::Shatter.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "nn/shatter.h"
#include "longattn/ops.h"

namespace {

// Dense composite: [B, N, N] weights, then sum_p (A * Pi_p) V_p.
at::Tensor composite(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& part,
                     bool causal) {
  const int64_t N = q.size(1);
  auto s = torch::matmul(q, k.transpose(1, 2)) / std::sqrt(double(q.size(2)));
  if (causal) s = s.masked_fill(torch::ones({N, N}, torch::kBool).triu(1), -INFINITY);
  auto a = torch::softmax(s, -1);
  auto i = torch::arange(N);
  auto pi = part.index_select(1, (i.unsqueeze(0) - i.unsqueeze(1) + (N - 1)).reshape(-1)).reshape({-1, N, N});
  return torch::einsum("bij,pij,bpjd->bid", {a, pi, v});
}

}  // namespace

TEST(ShatterCpp, OperatorMatchesCompositeWithGradients) {
  torch::manual_seed(0);
  auto o64 = torch::TensorOptions().dtype(torch::kFloat64);
  auto q = torch::randn({2, 11, 4}, o64).requires_grad_();
  auto k = torch::randn({2, 11, 4}, o64).requires_grad_();
  auto v = torch::randn({2, 3, 11, 5}, o64).requires_grad_();
  auto part = torch::rand({3, 21}, o64).requires_grad_();
  longattn::ShatterAttentionOptions opt;
  opt.causal = true;
  auto out = longattn::shatter_attention(q, k, v, part, opt);
  auto ref = composite(q, k, v, part, true);
  EXPECT_TRUE(torch::allclose(out, ref, 1e-10, 1e-12));
  auto g = torch::randn_like(out);
  auto grads = torch::autograd::grad({out}, {q, k, v, part}, {g});
  auto ref_grads = torch::autograd::grad({ref}, {q, k, v, part}, {g});
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(torch::allclose(grads[i], ref_grads[i], 1e-9, 1e-11)) << i;
}

TEST(ShatterCpp, PartitionIsAPartitionOfUnityForAnyParameters) {
  torch::manual_seed(1);
  for (std::string kind : {"softmax", "bernstein"})
    for (int64_t P : {1, 3, 4}) {
      longattn::nn::ShatterPartition part(longattn::nn::ShatterPartitionOptions(P).kind(kind).degree(3));
      part->to(torch::kFloat64);
      for (double scale : {0.0, 1.0, 30.0}) {
        if (part->weight.defined()) {
          torch::NoGradGuard ng;
          part->weight.copy_(scale * torch::randn_like(part->weight));
        }
        auto pi = part->forward(300).to(torch::kFloat64);
        ASSERT_EQ(pi.sizes(), (std::vector<int64_t>{P, 599}));
        EXPECT_TRUE((pi >= 0).all().item<bool>()) << kind;
        EXPECT_TRUE(torch::allclose(pi.sum(0), torch::ones({599}, torch::kFloat64), 0, 1e-6)) << kind << P;
      }
    }
}

TEST(ShatterCpp, LayerRunsAndTrainsEveryParameter) {
  torch::manual_seed(2);
  for (bool key_projection : {true, false}) {
    longattn::nn::Shatter layer(longattn::nn::ShatterOptions(32).num_parts(4).qk_dim(8).key_projection(key_projection));
    auto x = torch::randn({3, 20, 32});
    auto mask = torch::ones({3, 20}, torch::kBool);
    mask.index_put_({1, torch::indexing::Slice(15)}, false);
    auto y = layer->forward(x, mask);
    ASSERT_EQ(y.sizes(), x.sizes());
    y.square().mean().backward();
    for (auto& p : layer->named_parameters()) {
      ASSERT_TRUE(p.value().grad().defined()) << p.key();
      EXPECT_TRUE((p.value().grad() != 0).any().item<bool>()) << p.key();
    }
    EXPECT_EQ(bool(layer->k_proj), key_projection);
  }
}
