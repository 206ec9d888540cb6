// FastRPB (Zubkov & Gavrilov 2022): a learned relative positional bias applied to the values,
// out = attention(q, k, v) + B v, with B a Toeplitz matrix per head (1-D), or for an image the
// separable B[(a,b),(a',b')] = w_row[a' - a] + w_col[b' - b] (2-D). Independent of the attention
// mechanism. B v is computed by longattn.toeplitz_matmul(_2d): O(N log N) per channel, never an
// N x N matrix, exact gradients for the weights and v.
#pragma once

#include <torch/torch.h>

#include <string>

namespace longattn::nn {

struct FastRPBOptions {
  int64_t heads = 1;
  int64_t max_len = 512;       // longest sequence (1-D) or longest image side (2-D) covered
  std::string kind = "full";   // "full": 2 max_len - 1 free weights per head (w_r != w_-r);
                               // "symmetric": max_len weights, w_r = w_|r|
  bool two_d = false;          // image of height x width flattened row by row
  int64_t height = 0, width = 0;
  bool separate_axes = false;  // 2-D: own weights for rows and columns (the authors share one)
  bool causal = false;         // 1-D only: key j adds to output i only when j <= i
  // Leading tokens (e.g. CLS) outside the bias: their rows and columns of B are zero, as the
  // authors do. In 2-D the tokens before the height x width grid are always left out.
  int64_t special_tokens = 0;
};

class FastRPBImpl : public torch::nn::Module {
 public:
  explicit FastRPBImpl(const FastRPBOptions& options);
  // The form the encoder uses: full weights, shared by both axes in 2-D, tokens before the grid
  // left out.
  FastRPBImpl(int64_t heads, int64_t max_len, bool two_d, int64_t height, int64_t width);

  // v [B, H, N, D] -> B v [B, H, N, D]. key_mask [B, N] (bool, true = the key takes part; may be
  // undefined): masked keys contribute nothing.
  torch::Tensor forward(const torch::Tensor& v, const torch::Tensor& key_mask = {});

  // The per-offset coefficients [H, 2n - 1] for n tokens: the central slice of the full layout.
  torch::Tensor coefficients(int64_t n, bool rows = true) const;

  const FastRPBOptions& options() const { return options_; }
  torch::Tensor weights;      // full: [H, 2 max_len - 1]; symmetric: [H, max_len]
  torch::Tensor col_weights;  // 2-D with separate_axes only, same layout

 private:
  FastRPBOptions options_;
};
TORCH_MODULE(FastRPB);

}  // namespace longattn::nn
