#include "nn/attention.h"

#include "longattn/ops.h"
#include "nn/yoso.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "longattn/ops.h"
#include "nn/shatter.h"

namespace longattn::nn {
namespace {

// A learned relative-position bias [H, 2M - 1] (index j - i + M - 1, zeros at the start); a
// sequence of n <= M tokens uses the central 2n - 1 coefficients.
torch::Tensor central_bias(const torch::Tensor& bias, int64_t max_len, int64_t n, const char* who) {
  TORCH_CHECK(n <= max_len, who, ": sequence of ", n, " tokens, but the bias covers ", max_len);
  return bias.slice(1, max_len - n, max_len + n - 1);
}

// Exact softmax attention (longattn::softmax_attention), optionally with a learned relative
// bias on the logits.
class SoftmaxCore : public AttentionCoreImpl {
 public:
  SoftmaxCore(const AttentionSpec& s, bool rel_bias) : max_len_(s.max_len) {
    if (rel_bias) bias_ = register_parameter("rel_bias", torch::zeros({s.heads, 2 * s.max_len - 1}));
  }
  torch::Tensor forward(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                        const torch::Tensor& key_mask) override {
    SoftmaxAttentionOptions o;
    o.key_padding_mask = key_mask;
    if (bias_.defined()) o.rel_bias = central_bias(bias_, max_len_, q.size(2), "softmax-rpe").to(q.dtype());
    return softmax_attention(q, k, v, o);
  }

 private:
  int64_t max_len_;
  torch::Tensor bias_;
};

// Kernelized attention (longattn::kernelized_attention) with a named feature map: "elu" (linear,
// Katharopoulos et al.), "sikf" (FastRPB's shift-invariant exp), "favor" (Performer's positive
// random features, a fixed orthogonal projection per head drawn from the layer's seed; q and k
// scaled by Dh^-1/4 so that the kernel estimates softmax(q k^T / sqrt(Dh))). With rel_bias, Luo
// et al. (2021): a learned relative-position bias b [H, 2 max_len - 1] weights key j for query i
// by e^{b[j-i]} (kernelized_attention's rel_bias: the same feature maps and eps).
class KernelizedCore : public AttentionCoreImpl {
 public:
  KernelizedCore(const AttentionSpec& s, std::string feature_map, bool rel_bias)
      : map_(std::move(feature_map)), max_len_(s.max_len) {
    if (map_ == "favor") {
      RandomFeaturesOptions o;
      o.heads = s.heads;
      omega_ = register_buffer("omega", random_features(kFavorFeatures, s.dim / s.heads, int64_t(s.seed % (1ull << 62)), o));
    }
    if (rel_bias) bias_ = register_parameter("rel_bias", torch::zeros({s.heads, 2 * s.max_len - 1}));
  }
  torch::Tensor forward(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                        const torch::Tensor& key_mask) override {
    KernelizedAttentionOptions o;
    o.key_padding_mask = key_mask;
    if (bias_.defined()) o.rel_bias = central_bias(bias_, max_len_, q.size(2), "kernelized-rpe").to(q.dtype());
    if (map_ != "favor") return kernelized_attention(q, k, v, map_, o);
    o.projection = omega_.to(q.dtype());
    const double s = std::pow(double(q.size(3)), -0.25);
    return kernelized_attention(q * s, k * s, v, map_, o);
  }

 private:
  std::string map_;
  int64_t max_len_;
  torch::Tensor omega_, bias_;
};

// Shatter (nn/shatter.h, longattn::shatter_attention): ONE head over all channels, so q and k
// are the H heads' slices put back together ([B, N, dim]); the value channels split into P
// streams of dim / P, weighted by a learned soft partition of the relative positions. The
// result ([B, N, dim / P]) is copied into the P slots of the output, so the layer's output
// projection reads it: the same function as Shatter's own dim / P -> dim projection, and the
// parameter count stays that of the other mechanisms (plus the partition's P x 3 weights).
class ShatterCore : public AttentionCoreImpl {
 public:
  explicit ShatterCore(const AttentionSpec& s) {
    if (s.dim % kShatterParts != 0)
      throw std::invalid_argument("shatter: dim " + std::to_string(s.dim) + " is not a multiple of its " +
                                  std::to_string(kShatterParts) + " parts");
    partition_ = register_module("partition", ShatterPartition(ShatterPartitionOptions(kShatterParts)
                                                                   .max_distance(std::max<int64_t>(2, s.max_len))));
  }
  torch::Tensor forward(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                        const torch::Tensor& key_mask) override {
    const int64_t B = q.size(0), H = q.size(1), N = q.size(2), Dh = q.size(3), D = H * Dh, P = kShatterParts;
    auto join = [&](const torch::Tensor& x) { return x.transpose(1, 2).reshape({B, N, D}); };
    auto vs = join(v).view({B, N, P, D / P}).transpose(1, 2);  // [B, P, N, D / P]
    ShatterAttentionOptions o;
    o.key_padding_mask = key_mask;
    auto y = shatter_attention(join(q), join(k), vs, partition_->forward(N).to(q.dtype()), o);  // [B, N, D / P]
    return y.repeat({1, 1, P}).view({B, N, H, Dh}).transpose(1, 2);
  }

 private:
  ShatterPartition partition_{nullptr};
};

std::vector<AttentionEntry> builtin_attentions() {
  std::vector<AttentionEntry> r;
  r.push_back({"softmax", "exact softmax attention",
               [](const AttentionSpec& s) { return std::make_shared<SoftmaxCore>(s, false); }});
  r.push_back({"softmax-rpe", "exact softmax attention with a learned relative-position bias per head",
               [](const AttentionSpec& s) { return std::make_shared<SoftmaxCore>(s, true); }});
  r.push_back({"linear", "linear attention, elu(x)+1 features (Katharopoulos et al.)",
               [](const AttentionSpec& s) { return std::make_shared<KernelizedCore>(s, "elu", false); }});
  r.push_back({"sikf", "linear attention with the shift-invariant exp kernel (Zubkov & Gavrilov)",
               [](const AttentionSpec& s) { return std::make_shared<KernelizedCore>(s, "sikf", false); }});
  r.push_back({"favor", "Performer's FAVOR+: positive orthogonal random features, 64 per head",
               [](const AttentionSpec& s) { return std::make_shared<KernelizedCore>(s, "favor", false); }});
  r.push_back({"kernelized-rpe", "random-feature attention with a learned relative-position encoding (Luo et al.)",
               [](const AttentionSpec& s) { return std::make_shared<KernelizedCore>(s, "favor", true); }});
  // YOSO (nn/yoso.h, the paper's layer): τ = yoso_hash_bits(max_len), m = 32, Hadamard hashing.
  auto yoso = [](const AttentionSpec& s, int64_t conv, bool expectation) {
    const int64_t tau = yoso_hash_bits(s.max_len);
    return std::make_shared<YOSOAttentionImpl>(
        YOSOAttentionOptions(s.heads, tau).conv_window(conv).use_expectation(expectation).seed(s.seed));
  };
  r.push_back({"yoso", "YOSO: LSH Bernoulli sampling, linear (Zeng et al.), normalised output",
               [yoso](const AttentionSpec& s) { return yoso(s, 0, false); }});
  r.push_back({"yoso-c", "YOSO plus a depthwise convolution (window 33) of the values",
               [yoso](const AttentionSpec& s) { return yoso(s, 33, false); }});
  r.push_back({"yoso-e", "YOSO-E: the expectation of YOSO, O(N^2)",
               [yoso](const AttentionSpec& s) { return yoso(s, 0, true); }});
  r.push_back({"shatter", "Shatter: one head, 4 value streams over a soft partition of relative positions (Tian et al.)",
               [](const AttentionSpec& s) { return std::make_shared<ShatterCore>(s); }});
  return r;
}

}  // namespace

int64_t yoso_hash_bits(int64_t max_len) {
  return std::min<int64_t>(12, std::max<int64_t>(4, std::llround(std::log2(double(std::max<int64_t>(1, max_len))))));
}

const std::vector<AttentionEntry>& attention_registry() {
  static const std::vector<AttentionEntry> registry = builtin_attentions();
  return registry;
}

std::string attention_names() {
  std::string s;
  for (const auto& e : attention_registry()) s += (s.empty() ? "" : ", ") + e.name;
  return s;
}

std::shared_ptr<AttentionCoreImpl> make_attention_core(const AttentionSpec& spec) {
  for (const auto& e : attention_registry())
    if (e.name == spec.name) return e.make(spec);
  throw std::invalid_argument("unknown attention '" + spec.name + "'; known: " + attention_names());
}

// ---------------------------------------------------------------- multi-head layer

MultiHeadAttentionImpl::MultiHeadAttentionImpl(const AttentionSpec& spec) : spec_(spec) {
  if (spec.heads < 1 || spec.dim < 1)
    throw std::invalid_argument("attention: heads and dim must be >= 1, got heads " + std::to_string(spec.heads) +
                                ", dim " + std::to_string(spec.dim));
  if (spec.dim % spec.heads != 0)
    throw std::invalid_argument("dim " + std::to_string(spec.dim) + " is not a multiple of heads " + std::to_string(spec.heads));
  qkv_ = register_module("qkv", torch::nn::Linear(spec.dim, 3 * spec.dim));
  out_ = register_module("out", torch::nn::Linear(spec.dim, spec.dim));
  core_ = register_module("core", make_attention_core(spec));
  if (spec.fastrpb == "1d" || spec.fastrpb == "2d")
    rpb_ = register_module("fastrpb", spec.fastrpb == "2d"  // 2-D offsets span one side of the grid
                                          ? FastRPB(spec.heads, std::max(spec.height, spec.width), true, spec.height, spec.width)
                                          : FastRPB(spec.heads, spec.max_len, false, 0, 0));
  else if (spec.fastrpb != "none")
    throw std::invalid_argument("fastrpb must be none, 1d or 2d, got '" + spec.fastrpb + "'");
}

torch::Tensor MultiHeadAttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& key_mask) {
  const int64_t B = x.size(0), N = x.size(1), H = spec_.heads, Dh = spec_.dim / H;
  auto qkv = qkv_->forward(x).view({B, N, 3, H, Dh}).permute({2, 0, 3, 1, 4});  // [3, B, H, N, Dh]
  auto q = qkv[0], k = qkv[1], v = qkv[2];
  auto y = core_->forward(q, k, v, key_mask);
  if (rpb_) y = y + rpb_->forward(v, key_mask);
  return out_->forward(y.transpose(1, 2).reshape({B, N, spec_.dim}));
}

}  // namespace longattn::nn
