// Pieces shared by the forward and backward softmax attention kernels: tile sizes, the
// per-key-block mask summary, and the step that turns a tile of raw scores into logits
// (relative bias, key padding mask, causal mask).
//
// Logits are kept in base-2 units (multiplied by log2(e)) so the softmax needs exp2 only:
// the scale folded into the QK^T GEMM is scale * log2(e), and the bias is added times log2(e).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>
#include <vector>

#include "kernels/softmax_attention/softmax_attention.h"

namespace longattn::kernels::softmax_attention_detail {

// Query and key block sizes. A score tile (128 x 128 floats, 64 KiB) stays in L2, and every
// GEMM operand panel (at most 128 x 64 floats) in the 48 KiB L1.
constexpr int64_t kBlockQ = 128;
constexpr int64_t kBlockK = 128;

constexpr double kLog2e = 1.4426950408889634;
constexpr double kLn2 = 0.6931471805599453;

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Cache-line aligned scratch buffer, allocated once per call or per thread, never in loops.
template <class T>
class Scratch {
 public:
  Scratch() = default;
  explicit Scratch(int64_t n) { resize(n); }
  void resize(int64_t n) {
    if (n <= n_) return;
    size_t bytes = ((static_cast<size_t>(n) * sizeof(T) + 63) / 64) * 64;
    void* p = std::aligned_alloc(64, bytes);
    if (!p) throw std::bad_alloc();
    ptr_.reset(static_cast<T*>(p));
    n_ = n;
  }
  T* data() const { return ptr_.get(); }

 private:
  struct Free {
    void operator()(T* p) const { std::free(p); }
  };
  std::unique_ptr<T, Free> ptr_;
  int64_t n_ = 0;
};

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

// The relative bias reversed, per head: rb[h][i - j + N - 1] = bias[h][j - i + N - 1], so a
// row of the transposed score tile (one key, consecutive queries) reads it forwards.
template <class T>
std::vector<T> reversed_bias(const T* bias, int64_t stride_h, int64_t H, int64_t N) {
  std::vector<T> rb;
  if (!bias) return rb;
  rb.resize(static_cast<size_t>(H * (2 * N - 1)));
  for (int64_t h = 0; h < H; ++h)
    for (int64_t t = 0; t < 2 * N - 1; ++t) rb[h * (2 * N - 1) + t] = bias[h * stride_h + 2 * N - 2 - t];
  return rb;
}

// Score tiles are stored transposed: St[r][c] is key j0 + r against query i0 + c (row stride
// ld), so the softmax statistics of the queries run along the vector lanes.
// Turns St from scale*log2e * q.k into the full base-2 logits: adds log2e * bias (rb_h: this
// head's reversed bias, or nullptr), -inf for masked keys (mask_add: 0 / -inf per key, or
// nullptr), and -inf where causal forbids j > i.
template <class T>
void finish_logits(T* St, int64_t ld, const Tile& t, const T* rb_h, int64_t N, const T* mask_add,
                   bool causal) {
  const T l2e = T(kLog2e);
  for (int64_t r = 0; r < t.nj; ++r) {
    T* s = St + r * ld;
    const int64_t j = t.j0 + r;
    if (mask_add && mask_add[j] != T(0)) {
      std::fill_n(s, t.ni, T(-INFINITY));
      continue;
    }
    if (rb_h) {
      const T* bp = rb_h + (t.i0 - j + N - 1);  // bp[c] is the bias of query i0 + c
      for (int64_t c = 0; c < t.ni; ++c) s[c] += l2e * bp[c];
    }
    if (causal) std::fill_n(s, std::clamp<int64_t>(j - t.i0, 0, t.ni), T(-INFINITY));
  }
}

}  // namespace longattn::kernels::softmax_attention_detail
