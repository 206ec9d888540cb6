#include "nn/attention.h"

#include "longattn/ops.h"
#include "nn/yoso.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace longattn::nn {
namespace {

// Exact softmax attention (the fused longattn operator), optionally with a learned relative bias on
// the logits: coefficients [H, 2M - 1] at index j - i + M - 1; a sequence of n < M tokens uses the
// central 2n - 1 of them.
class SoftmaxCore : public AttentionCoreImpl {
 public:
  SoftmaxCore(const AttentionSpec& s, bool rel_bias) : max_len_(s.max_len) {
    if (rel_bias) bias_ = register_parameter("rel_bias", torch::zeros({s.heads, 2 * s.max_len - 1}));
  }
  torch::Tensor forward(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                        const torch::Tensor& key_mask) override {
    const int64_t n = q.size(2);
    SoftmaxAttentionOptions o;
    o.key_padding_mask = key_mask;
    if (bias_.defined()) {
      TORCH_CHECK(n <= max_len_, "softmax-rpe: sequence of ", n, " tokens, but the bias covers ", max_len_);
      o.rel_bias = bias_.slice(1, max_len_ - n, max_len_ + n - 1).to(q.dtype());
    }
    return softmax_attention(q, k, v, o);
  }

 private:
  int64_t max_len_;
  torch::Tensor bias_;
};

// Linear attention with a feature map phi: out_i = phi(q_i)^T S / (phi(q_i)^T z + eps), with
// S = sum_j phi(k_j) v_j^T and z = sum_j phi(k_j) over the keys that take part.
//  - "linear": phi = elu + 1 (Katharopoulos et al. 2020);
//  - "sikf":   phi = exp after subtracting one scalar per (batch, head), mean(q) + mean(k); the
//    shift cancels between numerator and denominator (papers.md 3.2), it only keeps exp in range.
class LinearCore : public AttentionCoreImpl {
 public:
  explicit LinearCore(bool shift_invariant_exp) : sikf_(shift_invariant_exp) {}
  torch::Tensor forward(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                        const torch::Tensor& key_mask) override {
    torch::Tensor fq, fk;
    auto m = key_mask.unsqueeze(1).unsqueeze(-1).to(q.dtype());  // [B, 1, N, 1]
    if (sikf_) {
      auto offset = (q.mean({2, 3}, true) + k.mean({2, 3}, true)).detach();
      fq = torch::exp(q - offset);
      fk = torch::exp(k - offset);
    } else {
      fq = torch::elu(q) + 1;
      fk = torch::elu(k) + 1;
    }
    fk = fk * m;
    auto s = torch::matmul(fk.transpose(-1, -2), v);  // [B, H, Dh, Dh]
    auto z = fk.sum(2, true);                         // [B, H, 1, Dh]
    auto den = (fq * z).sum(-1, true) + 1e-6;
    return torch::matmul(fq, s) / den;
  }

 private:
  bool sikf_;
};

std::vector<AttentionEntry> builtin_attentions() {
  std::vector<AttentionEntry> r;
  r.push_back({"softmax", "exact softmax attention",
               [](const AttentionSpec& s) { return std::make_shared<SoftmaxCore>(s, false); }});
  r.push_back({"softmax-rpe", "exact softmax attention with a learned relative-position bias per head",
               [](const AttentionSpec& s) { return std::make_shared<SoftmaxCore>(s, true); }});
  r.push_back({"linear", "linear attention, elu(x)+1 features (Katharopoulos et al.)",
               [](const AttentionSpec&) { return std::make_shared<LinearCore>(false); }});
  r.push_back({"sikf", "linear attention with the shift-invariant exp kernel (Zubkov & Gavrilov)",
               [](const AttentionSpec&) { return std::make_shared<LinearCore>(true); }});
  // YOSO (nn/yoso.h): τ = round(log2 max_len) and m = 32 as the authors, Hadamard hashing.
  auto yoso = [](const AttentionSpec& s, int64_t conv, bool expectation) {
    const int64_t tau = std::clamp<int64_t>(std::llround(std::log2(double(std::max<int64_t>(s.max_len, 2)))), 1, 30);
    return std::make_shared<YOSOAttentionImpl>(
        YOSOAttentionOptions(s.heads, tau).conv_window(conv).use_expectation(expectation).seed(s.seed));
  };
  r.push_back({"yoso", "YOSO: LSH Bernoulli sampling, linear (Zeng et al.), normalised output",
               [yoso](const AttentionSpec& s) { return yoso(s, 0, false); }});
  r.push_back({"yoso-c", "YOSO plus a depthwise convolution (window 33) of the values",
               [yoso](const AttentionSpec& s) { return yoso(s, 33, false); }});
  r.push_back({"yoso-e", "YOSO-E: the expectation of YOSO, O(N^2)",
               [yoso](const AttentionSpec& s) { return yoso(s, 0, true); }});
  return r;
}

}  // namespace

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
  if (spec.dim % spec.heads != 0)
    throw std::invalid_argument("dim " + std::to_string(spec.dim) + " is not a multiple of heads " + std::to_string(spec.heads));
  qkv_ = register_module("qkv", torch::nn::Linear(spec.dim, 3 * spec.dim));
  out_ = register_module("out", torch::nn::Linear(spec.dim, spec.dim));
  core_ = register_module("core", make_attention_core(spec));
  if (spec.fastrpb == "1d" || spec.fastrpb == "2d")
    rpb_ = register_module("fastrpb", FastRPB(spec.heads, spec.max_len, spec.fastrpb == "2d", spec.height, spec.width));
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
