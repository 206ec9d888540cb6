// Pieces shared by the forward and backward softmax attention kernels: tile sizes, scratch
// buffers, the per-key-block mask summary, and the two tile computations built on the block
// GEMM: the score tile (logits with relative bias, key padding mask and causal mask, then
// either their column max or their probabilities) and the tile of logit gradients.
// With AVX-512 (float) that elementwise work runs in the GEMM's epilogue, on registers.
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

#include "kernels/common/simd.h"
#include "kernels/common/block_gemm.h"
#include "kernels/softmax_attention/softmax_attention.h"

namespace longattn::kernels::softmax_attention_detail {

// Block sizes. Key blocks of 128; query blocks of 256, which amortise each K / V block over
// more queries (it matters once K and V outgrow L2), or 128 with causal masking, which wastes
// less on the tiles astride the diagonal. A score tile (128 x 256 floats, 128 KiB) stays in L2
// and the GEMM operand panels (at most 256 x 64 floats) in L1 or L2.
constexpr int64_t kBlockK = 128;
inline int64_t query_block(bool causal) { return causal ? 128 : 256; }

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

// Score tiles are stored transposed: St[r][c] is key j0 + r against query i0 + c (row stride
// ld), so the softmax statistics of the queries run along the vector lanes.
//
// What a score tile needs besides K and Q^T: rb_h is this head's reversed base-2 bias (or
// nullptr), mask_add the additive key mask (0 / -inf per key, or nullptr).
template <class T>
struct ScoreInputs {
  const T* k;  // first key row of the tile
  int64_t k_sn;
  const T* Qt;  // [D][ld] packed queries of the tile
  int64_t D;
  T qk_scale;  // scale * log2(e)
  const T* rb_h;
  int64_t N;
  const T* mask_add;
  bool causal;
};

// What a score tile writes. Logits are qk_scale * K Q^T + bias, -inf for masked keys and where
// causal forbids j > i (base 2). Three modes:
//  - colmax only:            St = logits, colmax[c] = max(colmax[c], column max);
//  - shift only:             St = exp2(logits - shift[c])  (probabilities, backward);
//  - colmax, shift, colsum:  both: St = exp2(logits - shift[c]), colmax as above and
//                            colsum[c] += column sum of St (forward with a running shift).
template <class T>
struct ScoreOutputs {
  T* colmax = nullptr;
  const T* shift = nullptr;
  T* colsum = nullptr;
};

// Portable version: a GEMM, then passes over the tile.
template <class T>
void score_tile(T* St, int64_t ld, const Tile& t, const ScoreInputs<T>& in,
                const ScoreOutputs<T>& o) {
  block_gemm(t.nj, t.ni, in.D, in.qk_scale, in.k, in.k_sn, 1, in.Qt, ld, false, St, ld);
  const bool causal = in.causal && t.causal_any_forbidden();
  for (int64_t r = 0; r < t.nj; ++r) {
    T* s = St + r * ld;
    const int64_t j = t.j0 + r;
    if (in.mask_add && in.mask_add[j] != T(0)) {
      std::fill_n(s, t.ni, T(-INFINITY));
      continue;
    }
    if (in.rb_h) {
      const T* bp = in.rb_h + (t.i0 - j + in.N - 1);  // bp[c] is the bias of query i0 + c
      for (int64_t c = 0; c < t.ni; ++c) s[c] += bp[c];
    }
    if (causal) std::fill_n(s, std::clamp<int64_t>(j - t.i0, 0, t.ni), T(-INFINITY));
  }
  if (o.colmax) simd::column_max(St, ld, t.nj, t.ni, o.colmax);
  if (o.shift) simd::exp2_columns(St, ld, t.nj, t.ni, o.shift, o.colsum);
}

// Gradient of the logits, transposed like the score tile: dS^T = P^T * (V dO^T - Di), where
// Pt is the probability tile, dOt the packed [Dv][ld] output gradient of the tile's queries and
// Di[c] = rowsum(dO * O) of query i0 + c. Portable version: a GEMM, then one pass.
template <class T>
void grad_score_tile(T* dSt, int64_t ld, const Tile& t, const T* v, int64_t v_sn, const T* dOt,
                     int64_t Dv, const T* Pt, const T* Di) {
  block_gemm(t.nj, t.ni, Dv, T(1), v, v_sn, 1, dOt, ld, false, dSt, ld);
  for (int64_t r = 0; r < t.nj; ++r) {
    const T* pr = Pt + r * ld;
    T* ds = dSt + r * ld;
    for (int64_t c = 0; c < t.ni; ++c) ds[c] = pr[c] * (ds[c] - Di[c]);
  }
}

#if defined(__AVX512F__)
// Float with AVX-512: the same, fused into the GEMM's epilogue while the tile is in registers.
struct ScoreEpilogue {
  float* St;
  int64_t ld;
  float alpha;
  const float* bias0;     // bias of (r, c) at bias0[c - r], or nullptr
  const float* row_add;   // per row: 0, or -inf for a masked key; or nullptr
  bool causal;
  int64_t causal_shift;   // (r, c) is forbidden when c < r + causal_shift (j0 - i0)
  ScoreOutputs<float> out;

  LONGATTN_ALWAYS_INLINE void operator()(int64_t r, int64_t c, __m512 x, __mmask16 mask) const {
    x = _mm512_mul_ps(x, _mm512_set1_ps(alpha));
    if (bias0) x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(mask, bias0 + (c - r)));
    if (row_add) x = _mm512_add_ps(x, _mm512_set1_ps(row_add[r]));
    if (causal) {
      const __m512i lane = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int>(c)),
                                            _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10,
                                                              11, 12, 13, 14, 15));
      const __mmask16 forbidden = _mm512_cmplt_epi32_mask(
          lane, _mm512_set1_epi32(static_cast<int>(r + causal_shift)));
      x = _mm512_mask_mov_ps(x, forbidden, _mm512_set1_ps(-INFINITY));
    }
    if (out.colmax)
      _mm512_mask_storeu_ps(out.colmax + c, mask,
                            _mm512_max_ps(_mm512_maskz_loadu_ps(mask, out.colmax + c), x));
    if (out.shift) x = simd::exp2(_mm512_sub_ps(x, _mm512_maskz_loadu_ps(mask, out.shift + c)));
    if (out.colsum)
      _mm512_mask_storeu_ps(out.colsum + c, mask,
                            _mm512_add_ps(_mm512_maskz_loadu_ps(mask, out.colsum + c), x));
    _mm512_mask_storeu_ps(St + r * ld + c, mask, x);
  }
};

inline void score_tile(float* St, int64_t ld, const Tile& t, const ScoreInputs<float>& in,
                       const ScoreOutputs<float>& out) {
  const ScoreEpilogue epi{St,
                          ld,
                          in.qk_scale,
                          in.rb_h ? in.rb_h + (t.i0 - t.j0 + in.N - 1) : nullptr,
                          in.mask_add ? in.mask_add + t.j0 : nullptr,
                          in.causal && t.causal_any_forbidden(),
                          t.j0 - t.i0,
                          out};
  block_gemm_apply(t.nj, t.ni, in.D, in.k, in.k_sn, 1, in.Qt, ld, epi);
}

struct GradScoreEpilogue {
  float* dSt;
  const float* Pt;
  int64_t ld;
  const float* Di;
  LONGATTN_ALWAYS_INLINE void operator()(int64_t r, int64_t c, __m512 x, __mmask16 mask) const {
    const __m512 p = _mm512_maskz_loadu_ps(mask, Pt + r * ld + c);
    const __m512 d = _mm512_maskz_loadu_ps(mask, Di + c);
    _mm512_mask_storeu_ps(dSt + r * ld + c, mask, _mm512_mul_ps(p, _mm512_sub_ps(x, d)));
  }
};

inline void grad_score_tile(float* dSt, int64_t ld, const Tile& t, const float* v, int64_t v_sn,
                            const float* dOt, int64_t Dv, const float* Pt, const float* Di) {
  block_gemm_apply(t.nj, t.ni, Dv, v, v_sn, 1, dOt, ld, GradScoreEpilogue{dSt, Pt, ld, Di});
}
#endif

}  // namespace longattn::kernels::softmax_attention_detail
