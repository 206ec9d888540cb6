#include "nn/yoso.h"

#include <stdexcept>
#include <string>

#include "longattn/ops.h"

namespace longattn::nn {

YOSOAttentionImpl::YOSOAttentionImpl(YOSOAttentionOptions o) : options(std::move(o)) {
  if (options.num_heads() < 1)
    throw std::invalid_argument("YOSOAttention: num_heads must be >= 1, got " + std::to_string(options.num_heads()));
  // An even window would make the padded convolution one position longer than the sequence.
  if (options.conv_window() < 0 || (options.conv_window() > 0 && options.conv_window() % 2 == 0))
    throw std::invalid_argument("YOSOAttention: conv_window must be 0 (none) or an odd integer >= 1, got " +
                                std::to_string(options.conv_window()));
  if (options.conv_window() > 0) {
    const int64_t w = options.conv_window(), h = options.num_heads();
    conv = register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(h, h, {w, 1})
                                                         .padding({w / 2, 0})
                                                         .groups(h)
                                                         .bias(false)));
  }
}

int64_t YOSOAttentionImpl::seed_for_call() {
  if (!is_training()) return int64_t(options.seed());
  return torch::randint(0, int64_t(1) << 62, {1}, torch::kLong).item<int64_t>();
}

torch::Tensor YOSOAttentionImpl::forward(const torch::Tensor& q, const torch::Tensor& k,
                                         const torch::Tensor& v, const torch::Tensor& key_mask) {
  torch::Tensor x;
  if (options.use_expectation()) {
    YosoExpectationOptions o;
    o.hash_bits = options.hash_bits();
    o.key_padding_mask = key_mask;
    x = yoso_expectation(q, k, v, o);
  } else {
    YosoOptions o;
    o.hash_bits = options.hash_bits();
    o.num_hashes = options.num_hashes();
    o.seed = seed_for_call();
    o.key_padding_mask = key_mask;
    o.hashing = options.hashing();
    o.backward = options.backward();
    x = yoso_attention(q, k, v, o);
  }
  x = torch::nn::functional::normalize(x, torch::nn::functional::NormalizeFuncOptions().p(2).dim(-1));
  // masked_fill, not a product: a masked token's garbage (NaN) must not reach the sum.
  if (conv)
    x = x + conv->forward(key_mask.defined() ? v.masked_fill(key_mask.logical_not().unsqueeze(1).unsqueeze(-1), 0) : v);
  return x;
}

}  // namespace longattn::nn
