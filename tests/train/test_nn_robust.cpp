// The C++ nn modules refuse nonsense with clear messages, and an undefined mask means no padding
// (issue 12, part 5; twins of tests/python/test_nn_robust.py).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

#include "nn/encoder.h"
#include "nn/fast_rpb.h"
#include "nn/yoso.h"

using namespace longattn;

namespace {

template <class F>
std::string message_of(F&& f) {
  try {
    f();
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "(no std::invalid_argument)";
}

nn::ModelConfig small() {
  nn::ModelConfig c;
  c.vocab_size = 11;
  c.num_classes = 3;
  c.max_len = 16;
  c.layers = 1;
  c.dim = 8;
  c.heads = 2;
  c.ffn = 8;
  c.dropout = 0.0;
  return c;
}

}  // namespace

TEST(NnRobust, UndefinedMaskMeansNoPadding) {
  for (const char* attention : {"softmax", "sikf", "yoso-e", "shatter"}) {
    torch::manual_seed(0);
    nn::ModelConfig c = small();
    c.attention = attention;
    nn::Classifier model(c);
    model->eval();
    auto tokens = torch::randint(0, 11, {2, 16}, torch::kLong);
    auto a = model->forward(tokens, torch::Tensor());
    auto b = model->forward(tokens, torch::ones({2, 16}, torch::kBool));
    EXPECT_TRUE(torch::equal(a, b)) << attention;
  }
}

TEST(NnRobust, ZeroSizesAreRefusedNotDividedBy) {
  for (const char* field : {"layers", "dim", "heads", "ffn"}) {
    nn::ModelConfig c = small();
    if (std::string(field) == "layers") c.layers = 0;
    if (std::string(field) == "dim") c.dim = 0;
    if (std::string(field) == "heads") c.heads = 0;
    if (std::string(field) == "ffn") c.ffn = 0;
    EXPECT_NE(message_of([&] { nn::Classifier m(c); }).find(std::string(field) + " must be >= 1, got 0"),
              std::string::npos)
        << field;
  }
}

TEST(NnRobust, YosoConvWindowMustBeOdd) {
  for (int64_t w : {-1, 2, 4}) {
    auto msg = message_of([&] { nn::YOSOAttention m(nn::YOSOAttentionOptions(2, 4).conv_window(w)); });
    EXPECT_NE(msg.find("conv_window must be 0 (none) or an odd integer >= 1, got " + std::to_string(w)),
              std::string::npos)
        << msg;
  }
  nn::YOSOAttention m(nn::YOSOAttentionOptions(2, 4).conv_window(3).use_expectation(true));
  auto q = torch::randn({1, 2, 7, 4}), k = torch::randn({1, 2, 7, 4}), v = torch::randn({1, 2, 7, 4});
  auto mask = torch::ones({1, 7}, torch::kBool);
  mask.index_put_({0, torch::indexing::Slice(5)}, false);
  auto masked = mask.logical_not().view({1, 1, 7, 1});
  auto clean = m->forward(q, k, v.masked_fill(masked, 0), mask);
  auto dirty = m->forward(q, k, v.masked_fill(masked, std::numeric_limits<float>::quiet_NaN()), mask);
  EXPECT_TRUE(torch::equal(clean, dirty));
}

TEST(NnRobust, FastRpbMaskedGarbageTakesNoPart) {
  nn::FastRPBOptions o;
  o.heads = 2;
  o.max_len = 6;
  nn::FastRPB rpb(o);
  auto v = torch::randn({2, 2, 6, 3});
  auto mask = torch::ones({2, 6}, torch::kBool);
  mask.index_put_({0, torch::indexing::Slice(4)}, false);
  auto masked = mask.logical_not().view({2, 1, 6, 1});
  auto clean = rpb->forward(v.masked_fill(masked, 0), mask);
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()})
    EXPECT_TRUE(torch::equal(rpb->forward(v.masked_fill(masked, bad), mask), clean));
}
