#include "kernels/fft/fft.h"

#include <cassert>
#include <cmath>
#include <cstring>
#include <map>
#include <mutex>

namespace longattn::kernels {
LONGATTN_ISA_BEGIN
namespace fft {

int64_t fast_length(int64_t n) {
  int64_t l = 1;
  while (l < n) l <<= 1;
  // 3 * 2^k (one radix-3 step) when it fits: up to 25% shorter than the power of two.
  if (l >= 4 && 3 * (l / 4) >= n) return 3 * (l / 4);
  return l;
}

namespace {

int log2_of(int64_t n) {
  int l = 0;
  while ((int64_t{1} << l) < n) ++l;
  return l;
}

// Position -> frequency map of the permuted spectrum: a radix-4 step sends frequency 4r + q to
// quarter q, at the place the sub-transform puts r.
void fill_order(int64_t m, int64_t* order) {
  if (m <= 2) {
    for (int64_t i = 0; i < m; ++i) order[i] = i;
    return;
  }
  const int64_t q = m / 4;
  fill_order(q, order);
  for (int64_t s = 0; s < q; ++s) order[s] *= 4;
  for (int j = 1; j < 4; ++j)
    for (int64_t s = 0; s < q; ++s) order[j * q + s] = order[s] + j;
}

template <class T>
std::shared_ptr<const Plan<T>> build_plan(int64_t n) {
  auto p = std::make_shared<Plan<T>>();
  p->n = n;
  const int64_t pow2 = n % 3 == 0 ? n / 3 : n;  // the power-of-two part
  const int lg = log2_of(pow2);
  p->offset.assign(lg + 1, 0);
  int64_t total = 0;
  for (int64_t m = pow2; m >= 4; m /= 4) {
    p->offset[log2_of(m)] = total;
    total += 6 * (m / 4);
  }
  p->twiddles.resize(total);
  if (n != pow2) {  // radix-3 step: w^k, w^2k for k < n / 3, w = exp(-2 pi i / n)
    p->twiddles3.resize(4 * pow2);
    for (int64_t k = 0; k < pow2; ++k)
      for (int j = 1; j <= 2; ++j) {
        const double a = -2.0 * M_PI * static_cast<double>(j * k) / static_cast<double>(n);
        p->twiddles3[4 * k + 2 * (j - 1)] = static_cast<T>(std::cos(a));
        p->twiddles3[4 * k + 2 * (j - 1) + 1] = static_cast<T>(std::sin(a));
      }
  }
  for (int64_t m = pow2; m >= 4; m /= 4) {
    T* tw = p->twiddles.data() + p->offset[log2_of(m)];
    for (int64_t k = 0; k < m / 4; ++k)
      for (int j = 1; j <= 3; ++j) {
        // Twiddles in double, rounded once: keeps float transforms accurate to ~eps log n.
        const double a = -2.0 * M_PI * static_cast<double>(j * k % m) / static_cast<double>(m);
        tw[6 * k + 2 * (j - 1)] = static_cast<T>(std::cos(a));
        tw[6 * k + 2 * (j - 1) + 1] = static_cast<T>(std::sin(a));
      }
  }
  p->order.resize(n);
  fill_order(pow2, p->order.data());
  if (n != pow2)  // the radix-3 step sends frequency 3r + q to third q
    for (int q = 2; q >= 0; --q)
      for (int64_t s = 0; s < pow2; ++s) p->order[q * pow2 + s] = 3 * p->order[s] + q;
  return p;
}

}  // namespace

template <class T>
std::shared_ptr<const Plan<T>> plan(int64_t n) {
  assert(n >= 1 && ((n & (n - 1)) == 0 || (n % 3 == 0 && ((n / 3) & (n / 3 - 1)) == 0)));
  static std::mutex mu;
  static std::map<int64_t, std::shared_ptr<const Plan<T>>> cache;
  {
    std::lock_guard<std::mutex> lock(mu);
    auto it = cache.find(n);
    if (it != cache.end()) return it->second;
  }
  auto built = build_plan<T>(n);  // outside the lock: big plans take a while
  std::lock_guard<std::mutex> lock(mu);
  if (cache.size() > 32) cache.clear();  // a small cache: lengths in use are few
  return cache.emplace(n, std::move(built)).first->second;
}

template std::shared_ptr<const Plan<float>> plan<float>(int64_t);
template std::shared_ptr<const Plan<double>> plan<double>(int64_t);

// ---------------------------------------------------------------------------------------------
// Butterflies on W-lane vectors.

namespace {

template <class T, int W>
struct Vec {
  typedef T type __attribute__((vector_size(W * sizeof(T))));
};

template <class T, int W>
struct Kernels {
  using V = typename Vec<T, W>::type;
  static V load(const T* p) {
    V v;
    std::memcpy(&v, p, sizeof v);
    return v;
  }
  static void store(T* p, V v) { std::memcpy(p, &v, sizeof v); }

  // Radix-4 decimation-in-frequency step on m elements starting at x (element stride 2W).
  static void dif4(T* x, int64_t m, const T* tw) {
    const int64_t q = m / 4;
    const int64_t s = 2 * W;
    for (int64_t k = 0; k < q; ++k) {
      T* pa = x + k * s;
      T* pb = pa + q * s;
      T* pc = pb + q * s;
      T* pd = pc + q * s;
      V ar = load(pa), ai = load(pa + W), br = load(pb), bi = load(pb + W);
      V cr = load(pc), ci = load(pc + W), dr = load(pd), di = load(pd + W);
      V t0r = ar + cr, t0i = ai + ci, t1r = ar - cr, t1i = ai - ci;
      V t2r = br + dr, t2i = bi + di;
      V t3r = bi - di, t3i = dr - br;  // -i (b - d)
      store(pa, t0r + t2r);
      store(pa + W, t0i + t2i);
      V y1r = t1r + t3r, y1i = t1i + t3i;
      V y2r = t0r - t2r, y2i = t0i - t2i;
      V y3r = t1r - t3r, y3i = t1i - t3i;
      if (k == 0) {
        store(pb, y1r), store(pb + W, y1i), store(pc, y2r), store(pc + W, y2i);
        store(pd, y3r), store(pd + W, y3i);
        continue;
      }
      const T* w = tw + 6 * k;
      store(pb, y1r * w[0] - y1i * w[1]);
      store(pb + W, y1r * w[1] + y1i * w[0]);
      store(pc, y2r * w[2] - y2i * w[3]);
      store(pc + W, y2r * w[3] + y2i * w[2]);
      store(pd, y3r * w[4] - y3i * w[5]);
      store(pd + W, y3r * w[5] + y3i * w[4]);
    }
  }

  // The adjoint of dif4: conjugate twiddles first, then the conjugate 4-point butterfly.
  static void dit4(T* x, int64_t m, const T* tw) {
    const int64_t q = m / 4;
    const int64_t s = 2 * W;
    for (int64_t k = 0; k < q; ++k) {
      T* pa = x + k * s;
      T* pb = pa + q * s;
      T* pc = pb + q * s;
      T* pd = pc + q * s;
      V u0r = load(pa), u0i = load(pa + W);
      V u1r = load(pb), u1i = load(pb + W);
      V u2r = load(pc), u2i = load(pc + W);
      V u3r = load(pd), u3i = load(pd + W);
      if (k != 0) {
        const T* w = tw + 6 * k;
        V r = u1r * w[0] + u1i * w[1], i = u1i * w[0] - u1r * w[1];
        u1r = r, u1i = i;
        r = u2r * w[2] + u2i * w[3], i = u2i * w[2] - u2r * w[3];
        u2r = r, u2i = i;
        r = u3r * w[4] + u3i * w[5], i = u3i * w[4] - u3r * w[5];
        u3r = r, u3i = i;
      }
      V s0r = u0r + u2r, s0i = u0i + u2i, s1r = u0r - u2r, s1i = u0i - u2i;
      V s2r = u1r + u3r, s2i = u1i + u3i;
      V s3r = u3i - u1i, s3i = u1r - u3r;  // i (u1 - u3)
      store(pa, s0r + s2r), store(pa + W, s0i + s2i);
      store(pb, s1r + s3r), store(pb + W, s1i + s3i);
      store(pc, s0r - s2r), store(pc + W, s0i - s2i);
      store(pd, s1r - s3r), store(pd + W, s1i - s3i);
    }
  }

  // Radix-3 decimation-in-frequency step on m = 3q elements (the top level only).
  static void dif3(T* x, int64_t m, const T* tw) {
    const int64_t q = m / 3, s = 2 * W;
    const T h = T(0.86602540378443864676);  // sqrt(3) / 2
    for (int64_t k = 0; k < q; ++k) {
      T* pa = x + k * s;
      T* pb = pa + q * s;
      T* pc = pb + q * s;
      V ar = load(pa), ai = load(pa + W), br = load(pb), bi = load(pb + W);
      V cr = load(pc), ci = load(pc + W);
      V t1r = br + cr, t1i = bi + ci, t2r = br - cr, t2i = bi - ci;
      V mr = ar - T(0.5) * t1r, mi = ai - T(0.5) * t1i;
      store(pa, ar + t1r), store(pa + W, ai + t1i);
      V y1r = mr + h * t2i, y1i = mi - h * t2r;  // a + w3 b + w3^2 c
      V y2r = mr - h * t2i, y2i = mi + h * t2r;  // a + w3^2 b + w3 c
      const T* w = tw + 4 * k;
      store(pb, y1r * w[0] - y1i * w[1]), store(pb + W, y1r * w[1] + y1i * w[0]);
      store(pc, y2r * w[2] - y2i * w[3]), store(pc + W, y2r * w[3] + y2i * w[2]);
    }
  }

  // The adjoint of dif3.
  static void dit3(T* x, int64_t m, const T* tw) {
    const int64_t q = m / 3, s = 2 * W;
    const T h = T(0.86602540378443864676);
    for (int64_t k = 0; k < q; ++k) {
      T* pa = x + k * s;
      T* pb = pa + q * s;
      T* pc = pb + q * s;
      const T* w = tw + 4 * k;
      V ar = load(pa), ai = load(pa + W);
      V br0 = load(pb), bi0 = load(pb + W), cr0 = load(pc), ci0 = load(pc + W);
      V br = br0 * w[0] + bi0 * w[1], bi = bi0 * w[0] - br0 * w[1];
      V cr = cr0 * w[2] + ci0 * w[3], ci = ci0 * w[2] - cr0 * w[3];
      V t1r = br + cr, t1i = bi + ci, t2r = br - cr, t2i = bi - ci;
      V mr = ar - T(0.5) * t1r, mi = ai - T(0.5) * t1i;
      store(pa, ar + t1r), store(pa + W, ai + t1i);
      store(pb, mr - h * t2i), store(pb + W, mi + h * t2r);  // u0 + conj(w3) u1 + conj(w3^2) u2
      store(pc, mr + h * t2i), store(pc + W, mi - h * t2r);
    }
  }

  // x[f] *= z[f] (or conj(z[f])) for m elements; z one lane [m][2].
  static void multiply(T* x, int64_t m, const T* z, bool conj) {
    for (int64_t f = 0; f < m; ++f) {
      const T zr = z[2 * f], zi = conj ? -z[2 * f + 1] : z[2 * f + 1];
      T* pr = x + f * 2 * W;
      V a = load(pr), b = load(pr + W);
      store(pr, a * zr - b * zi), store(pr + W, a * zi + b * zr);
    }
  }

  // dif4 when the upper half (c, d) is zero: neither read nor assumed written.
  static void dif4_upper_zero(T* x, int64_t m, const T* tw) {
    const int64_t q = m / 4, s = 2 * W;
    for (int64_t k = 0; k < q; ++k) {
      T* pa = x + k * s;
      T* pb = pa + q * s;
      T* pc = pb + q * s;
      T* pd = pc + q * s;
      V ar = load(pa), ai = load(pa + W), br = load(pb), bi = load(pb + W);
      V y1r = ar + bi, y1i = ai - br;  // a - i b
      V y2r = ar - br, y2i = ai - bi;
      V y3r = ar - bi, y3i = ai + br;  // a + i b
      store(pa, ar + br), store(pa + W, ai + bi);
      const T* w = tw + 6 * k;
      store(pb, y1r * w[0] - y1i * w[1]), store(pb + W, y1r * w[1] + y1i * w[0]);
      store(pc, y2r * w[2] - y2i * w[3]), store(pc + W, y2r * w[3] + y2i * w[2]);
      store(pd, y3r * w[4] - y3i * w[5]), store(pd + W, y3r * w[5] + y3i * w[4]);
    }
  }

  // dit4 that produces only the first half of its outputs (l = 0, 1); the rest is left stale.
  static void dit4_lower_half(T* x, int64_t m, const T* tw) {
    const int64_t q = m / 4, s = 2 * W;
    for (int64_t k = 0; k < q; ++k) {
      T* pa = x + k * s;
      T* pb = pa + q * s;
      T* pc = pb + q * s;
      T* pd = pc + q * s;
      const T* w = tw + 6 * k;
      V u0r = load(pa), u0i = load(pa + W);
      V b0 = load(pb), b1 = load(pb + W), c0 = load(pc), c1 = load(pc + W), d0 = load(pd), d1 = load(pd + W);
      V u1r = b0 * w[0] + b1 * w[1], u1i = b1 * w[0] - b0 * w[1];
      V u2r = c0 * w[2] + c1 * w[3], u2i = c1 * w[2] - c0 * w[3];
      V u3r = d0 * w[4] + d1 * w[5], u3i = d1 * w[4] - d0 * w[5];
      V s0r = u0r + u2r, s0i = u0i + u2i, s1r = u0r - u2r, s1i = u0i - u2i;
      V s2r = u1r + u3r, s2i = u1i + u3i, s3r = u3i - u1i, s3i = u1r - u3r;
      store(pa, s0r + s2r), store(pa + W, s0i + s2i);
      store(pb, s1r + s3r), store(pb + W, s1i + s3i);
    }
  }

  static void radix2(T* x) {
    V ar = load(x), ai = load(x + W), br = load(x + 2 * W), bi = load(x + 3 * W);
    store(x, ar + br), store(x + W, ai + bi), store(x + 2 * W, ar - br), store(x + 3 * W, ai - bi);
  }

  // Below this size a sub-transform is done stage by stage (256 elements of 2W values: 32 KiB
  // for float, in L1; measured 12% faster than 1024 at n = 8192 and 131072).
  static constexpr int64_t kBreadthFirst = 256;

  static void forward_rec(const Plan<T>& p, T* x, int64_t m) {
    if (m <= kBreadthFirst) {
      for (int64_t len = m; len >= 4; len /= 4) {
        const T* tw = p.twiddles.data() + p.offset[__builtin_ctzll(len)];
        for (int64_t b = 0; b < m; b += len) dif4(x + b * 2 * W, len, tw);
        if (len / 4 == 2)
          for (int64_t b = 0; b < m; b += 2) radix2(x + b * 2 * W);
      }
      if (m == 2) radix2(x);
      return;
    }
    dif4(x, m, p.twiddles.data() + p.offset[__builtin_ctzll(m)]);
    for (int j = 0; j < 4; ++j) forward_rec(p, x + j * (m / 4) * 2 * W, m / 4);
  }

  // z (optional): a one-lane spectrum aligned with x, multiplied in at the leaves, where the
  // block is about to be transformed anyway (saves a pass over memory).
  static void inverse_rec(const Plan<T>& p, T* x, int64_t m, const T* z = nullptr, bool conj = false) {
    if (m <= kBreadthFirst) {
      if (z) multiply(x, m, z, conj);
      // Stage sizes of the forward, smallest first.
      int64_t sizes[40];
      int ns = 0;
      for (int64_t len = m; len >= 4; len /= 4) sizes[ns++] = len;
      if (m == 2 || (ns > 0 && sizes[ns - 1] == 8))
        for (int64_t b = 0; b < m; b += 2) radix2(x + b * 2 * W);
      for (int s = ns - 1; s >= 0; --s) {
        const int64_t len = sizes[s];
        const T* tw = p.twiddles.data() + p.offset[__builtin_ctzll(len)];
        for (int64_t b = 0; b < m; b += len) dit4(x + b * 2 * W, len, tw);
      }
      return;
    }
    for (int j = 0; j < 4; ++j)
      inverse_rec(p, x + j * (m / 4) * 2 * W, m / 4, z ? z + j * (m / 4) * 2 : nullptr, conj);
    dit4(x, m, p.twiddles.data() + p.offset[__builtin_ctzll(m)]);
  }
};

}  // namespace

template <class T, int W>
void forward(const Plan<T>& p, T* data) {
  if (p.n % 3 != 0) return Kernels<T, W>::forward_rec(p, data, p.n);
  const int64_t q = p.n / 3;
  Kernels<T, W>::dif3(data, p.n, p.twiddles3.data());
  for (int j = 0; j < 3; ++j) Kernels<T, W>::forward_rec(p, data + j * q * 2 * W, q);
}
template <class T, int W>
void inverse(const Plan<T>& p, T* data) {
  inverse_product<T, W>(p, data, nullptr, false, p.n);
}

template <class T, int W>
void forward_padded(const Plan<T>& p, T* data, int64_t valid) {
  using K = Kernels<T, W>;
  const int64_t n = p.n;
  if (n % 3 != 0 && n > K::kBreadthFirst && 2 * valid <= n) {
    std::memset(static_cast<void*>(data + valid * 2 * W), 0, (n / 2 - valid) * 2 * W * sizeof(T));
    K::dif4_upper_zero(data, n, p.twiddles.data() + p.offset[__builtin_ctzll(n)]);
    for (int j = 0; j < 4; ++j) K::forward_rec(p, data + j * (n / 4) * 2 * W, n / 4);
    return;
  }
  std::memset(static_cast<void*>(data + valid * 2 * W), 0, (n - valid) * 2 * W * sizeof(T));
  forward<T, W>(p, data);
}

template <class T, int W>
void inverse_product(const Plan<T>& p, T* data, const T* z, bool conjugate, int64_t keep) {
  using K = Kernels<T, W>;
  const int64_t n = p.n;
  if (n % 3 == 0) {
    const int64_t q = n / 3;
    for (int j = 0; j < 3; ++j)
      K::inverse_rec(p, data + j * q * 2 * W, q, z ? z + j * q * 2 : nullptr, conjugate);
    K::dit3(data, n, p.twiddles3.data());
    return;
  }
  if (n <= K::kBreadthFirst || 2 * keep > n) return K::inverse_rec(p, data, n, z, conjugate);
  const int64_t q = n / 4;
  for (int j = 0; j < 4; ++j)
    K::inverse_rec(p, data + j * q * 2 * W, q, z ? z + j * q * 2 : nullptr, conjugate);
  K::dit4_lower_half(data, n, p.twiddles.data() + p.offset[__builtin_ctzll(n)]);
}

#define LONGATTN_FFT_INSTANTIATE(T, W)                                    \
  template void forward<T, W>(const Plan<T>&, T*);                   \
  template void inverse<T, W>(const Plan<T>&, T*);                   \
  template void forward_padded<T, W>(const Plan<T>&, T*, int64_t); \
  template void inverse_product<T, W>(const Plan<T>&, T*, const T*, bool, int64_t);
LONGATTN_FFT_INSTANTIATE(float, 1)
LONGATTN_FFT_INSTANTIATE(float, kLanes<float>)
LONGATTN_FFT_INSTANTIATE(double, 1)
LONGATTN_FFT_INSTANTIATE(double, kLanes<double>)
#undef LONGATTN_FFT_INSTANTIATE

}  // namespace fft
LONGATTN_ISA_END
}  // namespace longattn::kernels
