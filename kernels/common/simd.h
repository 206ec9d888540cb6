// Vectorised float32 building blocks for the kernels' inner loops: a fast exp2 and the
// operations of a softmax over the rows or the columns of a tile (max, exp2-and-sum).
// Three implementations chosen at compile time: AVX-512F when the level's code is compiled for it
// (kernels/CMakeLists.txt compiles each hot source once per level), AVX2+FMA, and plain scalar code. They agree to a few ulp; double-precision overloads are
// plain loops (double is what the gradient checks use, it need not be fast).
// exp2 returns exactly 0 for -inf and for results below the float range, so masked logits
// (-inf) give probabilities of exactly 0.
#pragma once
#include "kernels/common/isa_namespace.h"
#include <cmath>
#include <cstdint>
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
// GCC 12's AVX-512 headers trip -Wmaybe-uninitialized on their own _mm512_undefined_*
// placeholders (GCC bug 105593); the warning points into the header, so silence it there.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#endif

namespace longattn::kernels {
LONGATTN_ISA_BEGIN
namespace simd {

// 2^f for f in [-0.5, 0.5] as 1 + f * P(f): the minimax polynomial of Cephes' exp2f,
// relative error below 2e-7 (about 2 ulp in float).
namespace exp2_poly {
constexpr float c5 = 1.535336188319500e-4f, c4 = 1.339887440266574e-3f,
                c3 = 9.618437357674640e-3f, c2 = 5.550332471162809e-2f,
                c1 = 2.402264791363012e-1f, c0 = 6.931472028550421e-1f;
}  // namespace exp2_poly

// Scalar exp2 with exact 0 for x below the float range (and for -inf), used for loop tails
// and as the portable fallback. Same polynomial as the vector versions.
inline float exp2(float x) {
  using namespace exp2_poly;
  if (!(x >= -126.0f)) return x != x ? x : 0.0f;  // -inf and tiny results -> exactly 0
  if (x > 128.0f) x = 128.0f;                      // -> +inf below
  float n = std::nearbyint(x), f = x - n;
  float p = ((((c5 * f + c4) * f + c3) * f + c2) * f + c1) * f + c0;
  return std::ldexp(1.0f + f * p, static_cast<int>(n));
}
inline double exp2(double x) { return std::exp2(x); }

#if defined(__AVX512F__)
// 16 lanes; tails use masked loads and stores, so every element takes the same path.
constexpr int kFloatLanes = 16;

inline __m512 exp2(__m512 x) {
  using namespace exp2_poly;
  // Clamp: below -160 the result rounds to exactly 0 (2^-160 * 1.5 < half the smallest
  // denormal), so -inf -> 0; above 128 scalef gives +inf.
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-160.0f)), _mm512_set1_ps(129.0f));
  __m512 n = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 f = _mm512_sub_ps(x, n);
  __m512 p = _mm512_set1_ps(c5);
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(c4));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(c3));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(c2));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(c1));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(c0));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);  // p * 2^n with correct underflow to 0
}

inline __mmask16 tail_mask(int64_t remaining) {
  return remaining >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << remaining) - 1u);
}

// max over x[0, n); -inf when n == 0.
inline float row_max(const float* x, int64_t n) {
  __m512 m = _mm512_set1_ps(-INFINITY);
  for (int64_t i = 0; i < n; i += 16) {
    __mmask16 k = tail_mask(n - i);
    m = _mm512_mask_max_ps(m, k, m, _mm512_maskz_loadu_ps(k, x + i));
  }
  return _mm512_reduce_max_ps(m);
}

// x[i] = 2^(x[i] - shift) for i in [0, n); returns the sum of the new values.
inline float exp2_shift_sum(float* x, int64_t n, float shift) {
  __m512 s = _mm512_setzero_ps(), sh = _mm512_set1_ps(shift);
  for (int64_t i = 0; i < n; i += 16) {
    __mmask16 k = tail_mask(n - i);
    __m512 e = exp2(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + i), sh));
    _mm512_mask_storeu_ps(x + i, k, e);
    s = _mm512_mask_add_ps(s, k, s, e);
  }
  return _mm512_reduce_add_ps(s);
}


// Column operations on a row-major tile S [rows, cols] (row stride ld), 16 columns at a time
// held in registers while the rows stream past.
// colmax[c] = max(colmax[c], max_r S[r, c]).
inline void column_max(const float* S, int64_t ld, int64_t rows, int64_t cols, float* colmax) {
  for (int64_t c = 0; c < cols; c += 16) {
    const __mmask16 k = tail_mask(cols - c);
    __m512 m = _mm512_maskz_loadu_ps(k, colmax + c);
    for (int64_t r = 0; r < rows; ++r) m = _mm512_max_ps(m, _mm512_maskz_loadu_ps(k, S + r * ld + c));
    _mm512_mask_storeu_ps(colmax + c, k, m);
  }
}

// S[r, c] = 2^(S[r, c] - shift[c]); colsum[c] += sum_r of the new values (colsum may be null).
inline void exp2_columns(float* S, int64_t ld, int64_t rows, int64_t cols, const float* shift,
                         float* colsum) {
  for (int64_t c = 0; c < cols; c += 16) {
    const __mmask16 k = tail_mask(cols - c);
    const __m512 sh = _mm512_maskz_loadu_ps(k, shift + c);
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    int64_t r = 0;
    for (; r + 2 <= rows; r += 2) {  // two rows per step: two independent exp chains
      float* x0 = S + r * ld + c;
      float* x1 = x0 + ld;
      const __m512 e0 = exp2(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x0), sh));
      const __m512 e1 = exp2(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x1), sh));
      _mm512_mask_storeu_ps(x0, k, e0);
      _mm512_mask_storeu_ps(x1, k, e1);
      s0 = _mm512_add_ps(s0, e0);
      s1 = _mm512_add_ps(s1, e1);
    }
    if (r < rows) {
      float* x0 = S + r * ld + c;
      const __m512 e0 = exp2(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x0), sh));
      _mm512_mask_storeu_ps(x0, k, e0);
      s0 = _mm512_add_ps(s0, e0);
    }
    if (colsum)
      _mm512_mask_storeu_ps(colsum + c, k,
                            _mm512_add_ps(_mm512_maskz_loadu_ps(k, colsum + c), _mm512_add_ps(s0, s1)));
  }
}
// One vector register of floats, for code written once for both vector levels (the attention
// tile GEMM and its epilogues, kernels/common/block_gemm.h): AVX-512 here, AVX2 below. A Mask
// says which lanes of a vector at the end of a row are real; loads give 0 elsewhere and
// stores leave memory there untouched.
struct VecF {
  using Reg = __m512;
  using Mask = __mmask16;
  static constexpr int kLanes = 16;
  static constexpr int kRegisters = 32;
  static Mask full() { return Mask(0xFFFF); }
  static Mask tail(int64_t remaining) { return tail_mask(remaining); }
  static bool is_full(Mask m) { return m == Mask(0xFFFF); }
  static Reg zero() { return _mm512_setzero_ps(); }
  static Reg set1(float x) { return _mm512_set1_ps(x); }
  static Reg load(const float* p) { return _mm512_loadu_ps(p); }
  static Reg load(const float* p, Mask m) { return _mm512_maskz_loadu_ps(m, p); }
  static void store(float* p, Reg x, Mask m) { _mm512_mask_storeu_ps(p, m, x); }
  static Reg add(Reg a, Reg b) { return _mm512_add_ps(a, b); }
  static Reg sub(Reg a, Reg b) { return _mm512_sub_ps(a, b); }
  static Reg mul(Reg a, Reg b) { return _mm512_mul_ps(a, b); }
  static Reg max(Reg a, Reg b) { return _mm512_max_ps(a, b); }
  static Reg fmadd(Reg a, Reg b, Reg c) { return _mm512_fmadd_ps(a, b, c); }
  static Reg exp2(Reg x) { return simd::exp2(x); }
  // x with lane l replaced by `value` where first + l < limit.
  static Reg fill_below(Reg x, int64_t first, int64_t limit, float value) {
    const __m512i lane = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int>(first)),
                                          _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11,
                                                            12, 13, 14, 15));
    const __mmask16 below = _mm512_cmplt_epi32_mask(lane, _mm512_set1_epi32(static_cast<int>(limit)));
    return _mm512_mask_mov_ps(x, below, _mm512_set1_ps(value));
  }
};
#define LONGATTN_SIMD_HAS_VECF 1
#define LONGATTN_SIMD_HAS_COLUMN_OPS 1

#elif defined(__AVX2__) && defined(__FMA__)
constexpr int kFloatLanes = 8;

inline __m256 exp2(__m256 x) {
  using namespace exp2_poly;
  // Results below 2^-126 are flushed to exactly 0 (so -inf -> 0); the exponent is built
  // by integer arithmetic, valid for n in [-126, 127].
  __m256 underflow = _mm256_cmp_ps(x, _mm256_set1_ps(-126.0f), _CMP_LT_OQ);
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-126.0f)), _mm256_set1_ps(127.0f));
  __m256 n = _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 f = _mm256_sub_ps(x, n);
  __m256 p = _mm256_set1_ps(c5);
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(c4));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(c3));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(c2));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(c1));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(c0));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.0f));
  __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_andnot_ps(underflow, _mm256_mul_ps(p, _mm256_castsi256_ps(e)));
}

inline float hmax(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}
inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline float row_max(const float* x, int64_t n) {
  __m256 m = _mm256_set1_ps(-INFINITY);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) m = _mm256_max_ps(m, _mm256_loadu_ps(x + i));
  float r = hmax(m);
  for (; i < n; ++i) r = x[i] > r ? x[i] : r;
  return r;
}

inline float exp2_shift_sum(float* x, int64_t n, float shift) {
  __m256 s = _mm256_setzero_ps(), sh = _mm256_set1_ps(shift);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 e = exp2(_mm256_sub_ps(_mm256_loadu_ps(x + i), sh));
    _mm256_storeu_ps(x + i, e);
    s = _mm256_add_ps(s, e);
  }
  float r = hsum(s);
  for (; i < n; ++i) r += (x[i] = exp2(x[i] - shift));
  return r;
}

inline void column_max(const float* S, int64_t ld, int64_t rows, int64_t cols, float* colmax) {
  int64_t c = 0;
  for (; c + 8 <= cols; c += 8) {
    __m256 m = _mm256_loadu_ps(colmax + c);
    for (int64_t r = 0; r < rows; ++r) m = _mm256_max_ps(m, _mm256_loadu_ps(S + r * ld + c));
    _mm256_storeu_ps(colmax + c, m);
  }
  for (; c < cols; ++c)
    for (int64_t r = 0; r < rows; ++r) colmax[c] = S[r * ld + c] > colmax[c] ? S[r * ld + c] : colmax[c];
}

inline void exp2_columns(float* S, int64_t ld, int64_t rows, int64_t cols, const float* shift,
                         float* colsum) {
  int64_t c = 0;
  for (; c + 8 <= cols; c += 8) {
    const __m256 sh = _mm256_loadu_ps(shift + c);
    __m256 s = _mm256_setzero_ps();
    for (int64_t r = 0; r < rows; ++r) {
      float* x = S + r * ld + c;
      const __m256 e = exp2(_mm256_sub_ps(_mm256_loadu_ps(x), sh));
      _mm256_storeu_ps(x, e);
      s = _mm256_add_ps(s, e);
    }
    if (colsum) _mm256_storeu_ps(colsum + c, _mm256_add_ps(_mm256_loadu_ps(colsum + c), s));
  }
  for (; c < cols; ++c) {
    float s = 0;
    for (int64_t r = 0; r < rows; ++r) s += (S[r * ld + c] = exp2(S[r * ld + c] - shift[c]));
    if (colsum) colsum[c] += s;
  }
}
// AVX2 counterpart of VecF above (16 registers; masks are lane vectors, and full vectors take
// plain loads and stores, which are cheaper than the masked ones).
struct VecF {
  using Reg = __m256;
  struct Mask {
    __m256i lanes;
    bool full;
  };
  static constexpr int kLanes = 8;
  static constexpr int kRegisters = 16;
  static Mask full() { return Mask{_mm256_set1_epi32(-1), true}; }
  static Mask tail(int64_t remaining) {
    if (remaining >= 8) return full();
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return Mask{_mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(remaining)), lane), false};
  }
  static bool is_full(const Mask& m) { return m.full; }
  static Reg zero() { return _mm256_setzero_ps(); }
  static Reg set1(float x) { return _mm256_set1_ps(x); }
  static Reg load(const float* p) { return _mm256_loadu_ps(p); }
  static Reg load(const float* p, const Mask& m) {
    return m.full ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, m.lanes);
  }
  static void store(float* p, Reg x, const Mask& m) {
    if (m.full)
      _mm256_storeu_ps(p, x);
    else
      _mm256_maskstore_ps(p, m.lanes, x);
  }
  static Reg add(Reg a, Reg b) { return _mm256_add_ps(a, b); }
  static Reg sub(Reg a, Reg b) { return _mm256_sub_ps(a, b); }
  static Reg mul(Reg a, Reg b) { return _mm256_mul_ps(a, b); }
  static Reg max(Reg a, Reg b) { return _mm256_max_ps(a, b); }
  static Reg fmadd(Reg a, Reg b, Reg c) { return _mm256_fmadd_ps(a, b, c); }
  static Reg exp2(Reg x) { return simd::exp2(x); }
  static Reg fill_below(Reg x, int64_t first, int64_t limit, float value) {
    const __m256i lane = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(first)),
                                          _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    const __m256i below = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(limit)), lane);
    return _mm256_blendv_ps(x, _mm256_set1_ps(value), _mm256_castsi256_ps(below));
  }
};
#define LONGATTN_SIMD_HAS_VECF 1
#define LONGATTN_SIMD_HAS_COLUMN_OPS 1

#else
constexpr int kFloatLanes = 1;

inline float row_max(const float* x, int64_t n) {
  float r = -INFINITY;
  for (int64_t i = 0; i < n; ++i) r = x[i] > r ? x[i] : r;
  return r;
}

inline float exp2_shift_sum(float* x, int64_t n, float shift) {
  float r = 0;
  for (int64_t i = 0; i < n; ++i) r += (x[i] = exp2(x[i] - shift));
  return r;
}
#endif

// Double overloads: plain loops.
inline double row_max(const double* x, int64_t n) {
  double r = -INFINITY;
  for (int64_t i = 0; i < n; ++i) r = x[i] > r ? x[i] : r;
  return r;
}

inline double exp2_shift_sum(double* x, int64_t n, double shift) {
  double r = 0;
  for (int64_t i = 0; i < n; ++i) r += (x[i] = std::exp2(x[i] - shift));
  return r;
}

// Column operations, portable versions (double always; float without AVX-512).
#if !defined(LONGATTN_SIMD_HAS_COLUMN_OPS)
inline void column_max(const float* S, int64_t ld, int64_t rows, int64_t cols, float* colmax) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) colmax[c] = S[r * ld + c] > colmax[c] ? S[r * ld + c] : colmax[c];
}
inline void exp2_columns(float* S, int64_t ld, int64_t rows, int64_t cols, const float* shift,
                         float* colsum) {
  for (int64_t r = 0; r < rows; ++r) {
    float* x = S + r * ld;
    for (int64_t c = 0; c < cols; ++c) x[c] = exp2(x[c] - shift[c]);
    if (colsum)
      for (int64_t c = 0; c < cols; ++c) colsum[c] += x[c];
  }
}
#endif
inline void column_max(const double* S, int64_t ld, int64_t rows, int64_t cols, double* colmax) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) colmax[c] = S[r * ld + c] > colmax[c] ? S[r * ld + c] : colmax[c];
}
inline void exp2_columns(double* S, int64_t ld, int64_t rows, int64_t cols, const double* shift,
                         double* colsum) {
  for (int64_t r = 0; r < rows; ++r) {
    double* x = S + r * ld;
    for (int64_t c = 0; c < cols; ++c) x[c] = std::exp2(x[c] - shift[c]);
    if (colsum)
      for (int64_t c = 0; c < cols; ++c) colsum[c] += x[c];
  }
}

}  // namespace simd
LONGATTN_ISA_END
}  // namespace longattn::kernels
