#include "nn/encoder.h"

#include <cmath>
#include <sstream>
#include <stdexcept>

namespace longattn::nn {

std::string ModelConfig::to_string() const {
  std::ostringstream s;
  s << "vocab_size=" << vocab_size << " num_classes=" << num_classes << " max_len=" << max_len << " layers=" << layers
    << " dim=" << dim << " heads=" << heads << " ffn=" << ffn << " dropout=" << dropout << " attention=" << attention
    << " positions=" << positions << " pooling=" << pooling << " fastrpb=" << fastrpb << " height=" << height
    << " width=" << width << " paired=" << (paired ? 1 : 0) << " seed=" << seed;
  // Only when set: checkpoints written before the option existed keep their configuration string.
  if (embed_std != 1.0) s << " embed_std=" << embed_std;
  return s.str();
}

ModelConfig ModelConfig::from_string(const std::string& text) {
  ModelConfig c;
  std::istringstream is(text);
  std::string item;
  while (is >> item) {
    const auto eq = item.find('=');
    if (eq == std::string::npos) throw std::invalid_argument("model config item '" + item + "' is not key=value");
    const std::string k = item.substr(0, eq), v = item.substr(eq + 1);
    if (k == "vocab_size") c.vocab_size = std::stoll(v);
    else if (k == "num_classes") c.num_classes = std::stoll(v);
    else if (k == "max_len") c.max_len = std::stoll(v);
    else if (k == "layers") c.layers = std::stoll(v);
    else if (k == "dim") c.dim = std::stoll(v);
    else if (k == "heads") c.heads = std::stoll(v);
    else if (k == "ffn") c.ffn = std::stoll(v);
    else if (k == "dropout") c.dropout = std::stod(v);
    else if (k == "attention") c.attention = v;
    else if (k == "positions") c.positions = v;
    else if (k == "pooling") c.pooling = v;
    else if (k == "fastrpb") c.fastrpb = v;
    else if (k == "height") c.height = std::stoll(v);
    else if (k == "width") c.width = std::stoll(v);
    else if (k == "paired") c.paired = v == "1";
    else if (k == "seed") c.seed = std::stoull(v);
    else if (k == "embed_std") c.embed_std = std::stod(v);
    else throw std::invalid_argument("model config: unknown key '" + k + "'");
  }
  return c;
}

EncoderImpl::EncoderImpl(const ModelConfig& c) : c_(c) {
  if (c.vocab_size <= 0) throw std::invalid_argument("model: vocab_size must be positive");
  for (auto [name, v] : {std::pair<const char*, int64_t>{"layers", c.layers}, {"dim", c.dim}, {"heads", c.heads},
                         {"ffn", c.ffn}, {"max_len", c.max_len}})
    if (v < 1) throw std::invalid_argument(std::string("model: ") + name + " must be >= 1, got " + std::to_string(v));
  if (c.positions != "learned" && c.positions != "none")
    throw std::invalid_argument("positions must be learned or none, got '" + c.positions + "'");
  if (!(c.embed_std > 0) || !std::isfinite(c.embed_std))
    throw std::invalid_argument("model: embed_std must be a finite number > 0, got " + std::to_string(c.embed_std));
  embed_ = register_module("embed", torch::nn::Embedding(c.vocab_size, c.dim));
  if (c.embed_std != 1.0) {  // (1: torch's own initialisation, drawn above)
    torch::NoGradGuard no_grad;
    embed_->weight.normal_(0.0, c.embed_std);
  }
  if (c.positions == "learned") positions_ = register_parameter("positions", torch::randn({c.max_len, c.dim}) * 0.02);
  attn_norms_ = register_module("attn_norms", torch::nn::ModuleList());
  attns_ = register_module("attns", torch::nn::ModuleList());
  ffn_norms_ = register_module("ffn_norms", torch::nn::ModuleList());
  ffns_ = register_module("ffns", torch::nn::ModuleList());
  AttentionSpec spec;
  spec.name = c.attention;
  spec.dim = c.dim;
  spec.heads = c.heads;
  spec.max_len = c.max_len;
  spec.fastrpb = c.fastrpb;
  spec.height = c.height;
  spec.width = c.width;
  for (int64_t l = 0; l < c.layers; ++l) {
    spec.seed = c.seed * 1000003 + uint64_t(l);
    attn_norms_->push_back(torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.dim})));
    attns_->push_back(MultiHeadAttention(spec));
    ffn_norms_->push_back(torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.dim})));
    ffns_->push_back(torch::nn::Sequential(torch::nn::Linear(c.dim, c.ffn), torch::nn::GELU(),
                                           Dropout(c.dropout), torch::nn::Linear(c.ffn, c.dim)));
  }
  final_norm_ = register_module("final_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.dim})));
  drop_ = register_module("drop", Dropout(c.dropout));
}

namespace {
// The key mask [B, N] bool; an undefined one means every token takes part (no padding).
torch::Tensor full_mask(const torch::Tensor& tokens, const torch::Tensor& mask) {
  TORCH_CHECK(tokens.dim() == 2, "model: tokens must be [B, N], got ", tokens.sizes());
  if (!mask.defined()) return torch::ones(tokens.sizes(), tokens.options().dtype(torch::kBool));
  TORCH_CHECK(mask.sizes() == tokens.sizes() && mask.scalar_type() == torch::kBool,
              "model: mask must be bool ", tokens.sizes(), " like the tokens, got ", mask.scalar_type(), " ",
              mask.sizes());
  return mask;
}
}  // namespace

torch::Tensor EncoderImpl::forward(const torch::Tensor& tokens, const torch::Tensor& mask_in) {
  const torch::Tensor mask = full_mask(tokens, mask_in);
  const int64_t n = tokens.size(1);
  TORCH_CHECK(n <= c_.max_len, "model: sequence of ", n, " tokens, but the model was built for at most ", c_.max_len);
  auto x = embed_->forward(tokens);
  if (positions_.defined()) x = x + positions_.slice(0, 0, n).unsqueeze(0);
  x = drop_->forward(x);
  for (int64_t l = 0; l < c_.layers; ++l) {
    auto h = attn_norms_[l]->as<torch::nn::LayerNorm>()->forward(x);
    x = x + drop_->forward(attns_[l]->as<MultiHeadAttention>()->forward(h, mask));
    h = ffn_norms_[l]->as<torch::nn::LayerNorm>()->forward(x);
    x = x + drop_->forward(ffns_[l]->as<torch::nn::Sequential>()->forward(h));
  }
  return final_norm_->forward(x);
}

ClassifierImpl::ClassifierImpl(const ModelConfig& c) : c_(c) {
  if (c.pooling != "mean" && c.pooling != "cls") throw std::invalid_argument("pooling must be mean or cls, got '" + c.pooling + "'");
  encoder_ = register_module("encoder", Encoder(c));
  const int64_t in = c.paired ? 4 * c.dim : c.dim;
  head_ = register_module("head", torch::nn::Sequential(torch::nn::Linear(in, c.ffn), torch::nn::ReLU(),
                                                        torch::nn::Linear(c.ffn, c.num_classes)));
}

torch::Tensor ClassifierImpl::pool(const torch::Tensor& h, const torch::Tensor& mask) {
  if (c_.pooling == "cls") return h.select(1, 0);
  auto m = mask.unsqueeze(-1).to(h.dtype());
  return (h * m).sum(1) / m.sum(1).clamp_min(1.0);
}

torch::Tensor ClassifierImpl::forward(const torch::Tensor& tokens, const torch::Tensor& mask_in,
                                      const torch::Tensor& tokens2, const torch::Tensor& mask2_in) {
  const torch::Tensor mask = full_mask(tokens, mask_in);
  auto u = pool(encoder_->forward(tokens, mask), mask);
  if (!c_.paired) return head_->forward(u);
  TORCH_CHECK(tokens2.defined(), "retrieval model: the second documents are missing");
  const torch::Tensor mask2 = full_mask(tokens2, mask2_in);
  auto v = pool(encoder_->forward(tokens2, mask2), mask2);
  return head_->forward(torch::cat({u, v, u * v, u - v}, 1));
}

int64_t count_parameters(torch::nn::Module& m) {
  int64_t n = 0;
  for (const auto& p : m.parameters()) n += p.numel();
  return n;
}

}  // namespace longattn::nn
