#include "nn/fast_rpb.h"

#include <stdexcept>

#include "longattn/toeplitz.h"

namespace longattn::nn {

namespace {

// The authors' initialisation: almost zero with a tiny linear trend in the offset,
// w_r = |r| 1e-5 U(0, 1) + 1e-6 N(0, 1), so training starts from the plain attention.
torch::Tensor init_weights(int64_t heads, int64_t len, bool symmetric) {
  auto r = symmetric ? torch::arange(len, torch::kFloat)
                     : torch::arange(-(len - 1), len, torch::kFloat).abs();
  return r.unsqueeze(0) * 1e-5 * torch::rand({heads, r.size(0)}) + 1e-6 * torch::randn({heads, r.size(0)});
}

}  // namespace

FastRPBImpl::FastRPBImpl(const FastRPBOptions& o) : options_(o) {
  if (o.heads < 1 || o.max_len < 1)
    throw std::invalid_argument("FastRPB: heads and max_len must be >= 1, got heads = " +
                                std::to_string(o.heads) + ", max_len = " + std::to_string(o.max_len));
  if (o.kind != "full" && o.kind != "symmetric")
    throw std::invalid_argument("FastRPB: kind must be \"full\" or \"symmetric\", got \"" + o.kind + "\"");
  if (o.two_d && (o.height < 1 || o.width < 1 || std::max(o.height, o.width) > o.max_len))
    throw std::invalid_argument("FastRPB 2-D needs 1 <= height, width <= max_len, got " +
                                std::to_string(o.height) + " x " + std::to_string(o.width) +
                                " with max_len " + std::to_string(o.max_len));
  if (o.two_d && o.causal) throw std::invalid_argument("FastRPB: causal is for 1-D sequences only");
  if (o.special_tokens < 0) throw std::invalid_argument("FastRPB: special_tokens must be >= 0");
  const bool sym = o.kind == "symmetric";
  weights = register_parameter("weights", init_weights(o.heads, o.max_len, sym));
  if (o.two_d && o.separate_axes)
    col_weights = register_parameter("col_weights", init_weights(o.heads, o.max_len, sym));
}

FastRPBImpl::FastRPBImpl(int64_t heads, int64_t max_len, bool two_d, int64_t height, int64_t width)
    : FastRPBImpl([&] {
        FastRPBOptions o;
        o.heads = heads, o.max_len = max_len, o.two_d = two_d, o.height = height, o.width = width;
        return o;
      }()) {}

torch::Tensor FastRPBImpl::coefficients(int64_t n, bool rows) const {
  const auto& w = (!rows && col_weights.defined()) ? col_weights : weights;
  const int64_t M = options_.max_len;
  if (n > M)
    throw std::invalid_argument("FastRPB: " + std::to_string(n) + " positions, but the bias covers " +
                                std::to_string(M));
  if (options_.kind == "full") return w.slice(1, M - n, M + n - 1);  // offsets -(n-1) .. n-1
  auto idx = torch::arange(-(n - 1), n, w.options().dtype(torch::kLong).requires_grad(false)).abs();
  return w.index_select(1, idx);
}

torch::Tensor FastRPBImpl::forward(const torch::Tensor& v_in, const torch::Tensor& key_mask) {
  const auto& o = options_;
  if (v_in.dim() != 4 || v_in.size(1) != o.heads)
    throw std::invalid_argument("FastRPB: v must be [B, " + std::to_string(o.heads) + ", N, D]");
  const int64_t n = v_in.size(2);
  torch::Tensor v = v_in;
  // masked_fill, not a product: a masked token's garbage (NaN) must not reach the sum.
  if (key_mask.defined()) v = v.masked_fill(key_mask.logical_not().unsqueeze(1).unsqueeze(-1), 0);
  const int64_t lead = o.two_d ? n - o.height * o.width : o.special_tokens;
  if (lead < 0 || (o.two_d && lead < o.special_tokens))
    throw std::invalid_argument("FastRPB: " + std::to_string(n) + " tokens do not hold " +
                                std::to_string(o.special_tokens) + " special tokens and the grid");
  auto inner = lead > 0 ? v.slice(2, lead, n) : v;
  torch::Tensor out;
  if (o.two_d)
    out = toeplitz_matmul_2d(coefficients(o.height, true).to(v.dtype()),
                             coefficients(o.width, false).to(v.dtype()), inner, o.height, o.width);
  else
    out = toeplitz_matmul(coefficients(n - lead).to(v.dtype()), inner, o.causal);
  if (lead == 0) return out;
  return torch::cat({torch::zeros({v.size(0), v.size(1), lead, v.size(3)}, v.options()), out}, 2);
}

}  // namespace longattn::nn
