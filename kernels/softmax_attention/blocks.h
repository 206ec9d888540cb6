// The blocking of the softmax attention kernels: block sizes, the per-key-block summary of the
// key padding mask, tile coordinates and the reversed relative bias (tiles.h computes on them).
//
// Logits are kept in base-2 units (multiplied by log2(e)) so the softmax needs exp2 only:
// the scale folded into the QK^T GEMM is scale * log2(e), and the bias is added times log2(e).
#pragma once
#include "kernels/common/isa_namespace.h"
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/common/numeric.h"
#include "kernels/softmax_attention/softmax_attention.h"

namespace longattn::kernels {
LONGATTN_ISA_BEGIN
namespace softmax_attention_detail {

// Block sizes. Key blocks of 128; query blocks of 256, which amortise each K / V block over
// more queries (it matters once K and V outgrow L2), or 128 with causal masking, which wastes
// less on the tiles astride the diagonal. A score tile (128 x 256 floats, 128 KiB) stays in L2
// and the GEMM operand panels (at most 256 x 64 floats) in L1 or L2.
constexpr int64_t kBlockK = 128;
inline int64_t query_block(bool causal) { return causal ? 128 : 256; }

constexpr double kLog2e = 1.4426950408889634;
constexpr double kLn2 = 0.6931471805599453;

// What the key padding mask does to each key block of each batch element.
enum class BlockMask : uint8_t { kNone, kSome, kAll };  // keys masked: none, some, all

// Per batch element: an additive mask over keys (0 or -inf, in T) and a summary per key block,
// so blocks with every key masked are skipped and blocks with none need no additive pass.
template <class T>
struct KeyMask {
  std::vector<T> add;             // [B, Nk], empty when there is no mask
  std::vector<BlockMask> blocks;  // [B, nkb]
  int64_t Nk = 0, nkb = 0;

  KeyMask(const uint8_t* mask, int64_t mask_stride_b, int64_t B, int64_t Nk_, int64_t block)
      : Nk(Nk_), nkb(ceil_div(Nk_, block)) {
    blocks.assign(static_cast<size_t>(B * nkb), BlockMask::kNone);
    if (!mask) return;
    add.resize(static_cast<size_t>(B * Nk));
    for (int64_t b = 0; b < B; ++b)
      for (int64_t kb = 0; kb < nkb; ++kb) {
        int64_t j0 = kb * block, j1 = std::min(Nk, j0 + block), masked = 0;
        for (int64_t j = j0; j < j1; ++j) {
          bool keep = mask[b * mask_stride_b + j] != 0;
          add[b * Nk + j] = keep ? T(0) : T(-INFINITY);
          masked += !keep;
        }
        blocks[b * nkb + kb] = masked == 0 ? BlockMask::kNone
                               : masked == j1 - j0 ? BlockMask::kAll
                                                   : BlockMask::kSome;
      }
  }
  BlockMask block(int64_t b, int64_t kb) const { return blocks[b * nkb + kb]; }
  const T* add_row(int64_t b) const { return add.empty() ? nullptr : add.data() + b * Nk; }
};

// A tile covers queries [i0, i0 + ni) and keys [j0, j0 + nj).
struct Tile {
  int64_t i0, ni, j0, nj;
  // With causal masking: is any (i, j) of the tile allowed, and is any forbidden?
  bool causal_any_allowed() const { return j0 <= i0 + ni - 1; }
  bool causal_any_forbidden() const { return j0 + nj - 1 > i0; }
};

// The relative bias in base-2 units and reversed, per head:
// rb[h][i - j + N - 1] = log2(e) * bias[h][j - i + N - 1], so a row of the transposed score
// tile (one key, consecutive queries) reads it forwards.
template <class T>
std::vector<T> reversed_bias(const T* bias, int64_t stride_h, int64_t H, int64_t N) {
  std::vector<T> rb;
  if (!bias) return rb;
  rb.resize(static_cast<size_t>(H * (2 * N - 1)));
  for (int64_t h = 0; h < H; ++h)
    for (int64_t t = 0; t < 2 * N - 1; ++t)
      rb[h * (2 * N - 1) + t] = T(kLog2e) * bias[h * stride_h + 2 * N - 2 - t];
  return rb;
}

}  // namespace softmax_attention_detail
LONGATTN_ISA_END
}  // namespace longattn::kernels
