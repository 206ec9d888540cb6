// YOSO hashing: m hash functions of τ sign bits per (b, h), Gaussian or Hadamard pseudo-rotation,
// and the stable radix sort that turns codes into buckets.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/common/blas.h"
#include "kernels/common/parallel.h"
#include "kernels/common/random.h"
#include "kernels/yoso/yoso_internal.h"

namespace longattn::kernels {
LONGATTN_ISA_BEGIN
namespace {

using namespace yoso_detail;

constexpr int64_t kRowBlock = 64;  // rows hashed together (one GEMM or one transposed block)

// Rows of the transposed Hadamard block: kRowBlock, or fewer (a multiple of 16, one AVX-512
// vector of floats) for short sequences, where a full block would mostly transform zeros.
int64_t hadamard_block_rows(int64_t N) { return std::min(kRowBlock, (N + 15) / 16 * 16); }


void fill_normal(SplitMix64& g, double* out, int64_t n) {
  NormalStream normal{g};
  for (int64_t i = 0; i < n; ++i) out[i] = normal.next();
  g = normal.rng;
}


// Random parameters of one (b, h): Gaussian rows [m·τ, D], or ±1 diagonals [rotations, 3, Dpad].
template <class T>
std::vector<T> draw_hash_params(const YosoParams<T>& p, int64_t b, int64_t h) {
  auto g = yoso_stream(p.seed, b, h);
  const int64_t D = p.q.D;
  if (p.hashing == YosoHashing::gaussian) {
    const int64_t n = int64_t(p.num_hashes) * p.hash_bits * D;
    std::vector<double> z(n);
    fill_normal(g, z.data(), n);
    return std::vector<T>(z.begin(), z.end());
  }
  YosoHadamardShape s(D, p.hash_bits, p.num_hashes);
  std::vector<T> signs(s.rotations * 3 * s.dpad);
  for (auto& x : signs) x = (g.next() >> 63) ? T(1) : T(-1);
  return signs;
}

// Codes of rows [r0, r0 + R) of x through a dense projection W [m·τ, D]: one GEMM, then packing.
template <class T>
void hash_block_gaussian(const YosoParams<T>& p, const BHND<const T>& x, int64_t b, int64_t h,
                         int64_t r0, int64_t R, const T* W, T* proj, int32_t* codes) {
  const int tau = p.hash_bits, m = p.num_hashes;
  const int64_t cols = int64_t(m) * tau, N = x.N;
  gemm(false, true, R, cols, x.D, T(1), x.row(b, h, r0), x.sn, W, x.D, T(0), proj, cols);
  for (int64_t r = 0; r < R; ++r) {
    const T* pr = proj + r * cols;
    for (int hh = 0; hh < m; ++hh) {
      int32_t c = 0;
      for (int t = 0; t < tau; ++t) c |= int32_t(pr[hh * tau + t] > T(0)) << t;
      codes[int64_t(hh) * N + r0 + r] = c;
    }
  }
}

// In-place unnormalised Walsh–Hadamard transform along the first index of xt [dpad][rb]:
// every butterfly is a vector operation over the block's rows.
template <class T>
void fwht_columns(T* xt, int64_t dpad, int64_t rb) {
  for (int64_t len = 1; len < dpad; len <<= 1)
    for (int64_t i = 0; i < dpad; i += 2 * len)
      for (int64_t j = i; j < i + len; ++j) {
        T* a = xt + j * rb;
        T* c = xt + (j + len) * rb;
        for (int64_t r = 0; r < rb; ++r) {
          const T u = a[r], w = c[r];
          a[r] = u + w;
          c[r] = u - w;
        }
      }
}

// Codes of rows [r0, r0 + R) through H·D₃·H·D₂·H·D₁ rotations; xt, yt: scratch [dpad][rb].
template <class T>
void hash_block_hadamard(const YosoParams<T>& p, const BHND<const T>& x, int64_t b, int64_t h,
                         int64_t r0, int64_t R, const T* signs, T* xt, T* yt, int32_t* codes) {
  const int tau = p.hash_bits, m = p.num_hashes;
  const YosoHadamardShape s(x.D, tau, m);
  const int64_t rb = hadamard_block_rows(x.N);
  std::fill(xt, xt + s.dpad * rb, T(0));
  for (int64_t r = 0; r < R; ++r) {
    const T* row = x.row(b, h, r0 + r);
    for (int64_t d = 0; d < x.D; ++d) xt[d * rb + r] = row[d];
  }
  for (int64_t rot = 0; rot < s.rotations; ++rot) {
    const T* dg = signs + rot * 3 * s.dpad;
    for (int64_t d = 0; d < s.dpad; ++d)
      for (int64_t r = 0; r < rb; ++r) yt[d * rb + r] = xt[d * rb + r] * dg[d];
    for (int stage = 0; stage < 3; ++stage) {
      if (stage > 0) {
        const T* ds = dg + stage * s.dpad;
        for (int64_t d = 0; d < s.dpad; ++d)
          for (int64_t r = 0; r < rb; ++r) yt[d * rb + r] *= ds[d];
      }
      fwht_columns(yt, s.dpad, rb);
    }
    for (int64_t c = 0; c < s.per_rotation; ++c) {
      const int64_t hh = rot * s.per_rotation + c;
      if (hh >= m) break;
      int32_t* out = codes + hh * x.N + r0;
      int32_t acc[kRowBlock];  // rb <= kRowBlock; a fixed size, not a variable-length array (clang)
      std::fill_n(acc, rb, 0);
      for (int t = 0; t < tau; ++t) {
        const T* y = yt + (c * tau + t) * rb;
        for (int64_t r = 0; r < rb; ++r) acc[r] |= int32_t(y[r] > T(0)) << t;
      }
      for (int64_t r = 0; r < R; ++r) out[r] = acc[r];
    }
  }
}

}  // namespace

namespace yoso_detail {

int64_t sort_by_code(const int32_t* codes, int64_t n, int tau, int32_t* order, int32_t* sorted,
                     int32_t* tmp_order, int32_t* tmp_codes, int32_t* counts) {
  int64_t valid = 0;
  for (int64_t i = 0; i < n; ++i)
    if (codes[i] >= 0) {
      order[valid] = int32_t(i);
      sorted[valid++] = codes[i];
    }
  const int passes = (tau + 15) / 16;
  const int bits = (tau + passes - 1) / passes;
  const int32_t radix = int32_t(1) << bits;
  int32_t *src = order, *dst = tmp_order, *src_c = sorted, *dst_c = tmp_codes;
  for (int pass = 0; pass < passes; ++pass) {
    const int shift = pass * bits;
    std::memset(counts, 0, sizeof(int32_t) * (radix + 1));
    for (int64_t i = 0; i < valid; ++i) ++counts[((src_c[i] >> shift) & (radix - 1)) + 1];
    for (int32_t d = 0; d < radix; ++d) counts[d + 1] += counts[d];
    for (int64_t i = 0; i < valid; ++i) {
      const int32_t at = counts[(src_c[i] >> shift) & (radix - 1)]++;
      dst[at] = src[i];
      dst_c[at] = src_c[i];
    }
    std::swap(src, dst);
    std::swap(src_c, dst_c);
  }
  if (src != order) {
    std::memcpy(order, src, sizeof(int32_t) * valid);
    std::memcpy(sorted, src_c, sizeof(int32_t) * valid);
  }
  return valid;
}

}  // namespace yoso_detail

template <class T>
void yoso_hash(const YosoParams<T>& p, int32_t* q_codes, int32_t* k_codes) {
  const int64_t B = p.q.B, H = p.q.H, m = p.num_hashes;
  std::vector<std::vector<T>> params(B * H);
  const double flops = 2.0 * B * H * (p.q.N + p.k.N) * m * p.hash_bits * p.q.D;
  const int threads = threads_for(p.threads, B * H * 2, flops);
  parallel_for(B * H, threads, [&](int64_t bh) { params[bh] = draw_hash_params(p, bh / H, bh % H); });

  const int64_t q_blocks = (p.q.N + kRowBlock - 1) / kRowBlock;
  const int64_t k_blocks = (p.k.N + kRowBlock - 1) / kRowBlock;
  const int64_t per_bh = q_blocks + k_blocks;
  parallel_for(B * H * per_bh, threads, [&](int64_t item) {
    const int64_t bh = item / per_bh, blk = item % per_bh, b = bh / H, h = bh % H;
    const bool is_q = blk < q_blocks;
    const BHND<const T>& x = is_q ? p.q : p.k;
    const uint8_t* mask = is_q ? p.query_padding_mask : p.key_padding_mask;
    const int64_t mstride = is_q ? p.query_mask_stride_b : p.key_mask_stride_b;
    int32_t* codes = (is_q ? q_codes : k_codes) + bh * m * x.N;
    const int64_t r0 = (is_q ? blk : blk - q_blocks) * kRowBlock;
    const int64_t R = std::min(kRowBlock, x.N - r0);
    if (p.hashing == YosoHashing::gaussian) {
      std::vector<T> proj(R * m * p.hash_bits);
      hash_block_gaussian(p, x, b, h, r0, R, params[bh].data(), proj.data(), codes);
    } else {
      const YosoHadamardShape s(x.D, p.hash_bits, p.num_hashes);
      const int64_t rb = hadamard_block_rows(x.N);
      std::vector<T> xt(s.dpad * rb), yt(s.dpad * rb);
      hash_block_hadamard(p, x, b, h, r0, R, params[bh].data(), xt.data(), yt.data(), codes);
    }
    for (int64_t r = r0; r < r0 + R; ++r)
      if (!takes_part(mask, mstride, b, r))
        for (int64_t hh = 0; hh < m; ++hh) codes[hh * x.N + r] = -1;
  });
}

template void yoso_hash<float>(const YosoParams<float>&, int32_t*, int32_t*);
template void yoso_hash<double>(const YosoParams<double>&, int32_t*, int32_t*);

LONGATTN_ISA_END
}  // namespace longattn::kernels
