// What the fuzz cases share (kernel_fuzz.cpp runs them; cases_*.cpp hold them, one file per
// kernel family): failure reports, the byte decoder, buffers allocated to exactly their extent
// with marked padding, value regimes, masks, and the checks every case makes. See
// kernel_fuzz.cpp for the buffers' and markers' rules.
#pragma once
#include "fuzz/kernel_fuzz.h"

#include <algorithm>
#include <cmath>
#include <complex>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "kernels/common/random.h"
#include "kernels/dropout/dropout.h"
#include "kernels/fft/fft.h"
#include "kernels/kernelized_attention/feature_maps.h"
#include "kernels/kernelized_attention/kernelized_attention.h"
#include "kernels/kernelized_rpe/kernelized_rpe.h"
#include "kernels/shatter/shatter.h"
#include "kernels/softmax_attention/softmax_attention.h"
#include "kernels/toeplitz/toeplitz.h"
#include "kernels/yoso/yoso.h"


namespace kernel_fuzz {

using namespace longattn::kernels;

inline std::string g_origin;  // set by the driver (kernel_fuzz.cpp)
inline std::string g_case;    // the decoded case, for failure messages

[[noreturn]] inline __attribute__((format(printf, 1, 2))) void fail(const char* fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  std::fprintf(stderr, "\nkernel_fuzz: INVARIANT VIOLATED\n  origin: %s\n  case:   %s\n  what:   %s\n",
               g_origin.c_str(), g_case.c_str(), msg);
  std::fflush(stderr);
  std::abort();
}

inline void describe(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
inline void describe(const char* fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  if (!g_case.empty()) g_case += ' ';
  g_case += buf;
}

// ---------------------------------------------------------------------------------------------
// Decoding. Bytes past the end read as 0, and 0 always decodes to the simplest choice, so
// libFuzzer's shortened inputs stay meaningful.
class Bytes {
 public:
  Bytes(const uint8_t* d, size_t n) : d_(d), n_(n) {}
  uint8_t u8() { return pos_ < n_ ? d_[pos_++] : 0; }
  uint16_t u16() { return uint16_t(u8() | (u8() << 8)); }
  uint64_t u64() {
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v = (v << 8) | u8();
    return v;
  }
  int64_t below(int64_t n) { return n <= 1 ? 0 : int64_t(u16() % uint64_t(n)); }
  // One of the choices (byte 0: the first).
  template <class T, size_t K>
  T pick(const T (&choices)[K]) { return choices[u8() % K]; }

 private:
  const uint8_t* d_;
  size_t n_, pos_ = 0;
};

// Sizes: mostly the edges (1, odd, around the kernels' blocks of 64 and 128), else any in range.
inline int64_t size_in(Bytes& in, int64_t lo, int64_t hi) {
  static const int64_t kEdges[] = {1, 2, 3, 5, 7, 8, 16, 17, 31, 33, 63, 64, 65, 127, 128, 129, 191, 255, 256, 257, 300};
  const uint8_t sel = in.u8();
  int64_t n = sel < 160 ? kEdges[sel % (sizeof kEdges / sizeof kEdges[0])] : lo + in.below(hi - lo + 1);
  return std::clamp(n, lo, hi);
}

// Shrinks the largest of the sizes (never below 1) until their product is within `budget`: each
// case stays small (ASan runs at a few times the normal cost) whatever its shapes.
inline void fit_budget(std::initializer_list<int64_t*> sizes, double budget) {
  for (;;) {
    double work = 1;
    for (int64_t* s : sizes) work *= double(std::max<int64_t>(*s, 1));
    if (work <= budget) return;
    int64_t* largest = *sizes.begin();
    for (int64_t* s : sizes) if (*s > *largest) largest = s;
    if (*largest <= 1) return;
    *largest = (*largest + 1) / 2;
  }
}

// ---------------------------------------------------------------------------------------------
// Markers.
template <class T> T bits_as(uint64_t bits);
template <> inline float bits_as<float>(uint64_t bits) { float f; uint32_t b = uint32_t(bits); std::memcpy(&f, &b, 4); return f; }
template <> inline double bits_as<double>(uint64_t bits) { double f; std::memcpy(&f, &bits, 8); return f; }

template <class T> T input_pad();
template <class T> T output_pad();
template <> inline float input_pad<float>() { return bits_as<float>(0x7fc0beefu); }
template <> inline float output_pad<float>() { return bits_as<float>(0x7fc0deadu); }
template <> inline double input_pad<double>() { return bits_as<double>(0x7ff800000000beefull); }
template <> inline double output_pad<double>() { return bits_as<double>(0x7ff800000000deadull); }
template <> inline uint8_t input_pad<uint8_t>() { return 0xA5; }  // nonzero: a mask's padding reads "takes part"
template <> inline uint8_t output_pad<uint8_t>() { return 0x5A; }
template <> inline int32_t input_pad<int32_t>() { return INT32_MIN + 5; }
template <> inline int32_t output_pad<int32_t>() { return INT32_MIN + 7; }

template <class T>
bool same_bits(T a, T b) { return std::memcmp(&a, &b, sizeof(T)) == 0; }

// ---------------------------------------------------------------------------------------------
// Buffers. `inside[i]` marks the elements of the view; the rest is padding.
template <class T>
struct Buf {
  std::string name;
  std::unique_ptr<T[]> data;
  int64_t len = 0;
  std::vector<uint8_t> inside;
  std::vector<T> snapshot;  // inputs: every element (padding included) before the call

  T* ptr() const { return data.get(); }
};

// A buffer of `len` elements all of them inside (contiguous), filled with `fill`.
template <class T>
Buf<T> flat(const char* name, int64_t len, T fill) {
  Buf<T> b;
  b.name = name;
  b.len = len;
  b.data.reset(new T[size_t(len)]);  // new T[0] is a distinct pointer ASan guards
  std::fill_n(b.data.get(), len, fill);
  b.inside.assign(size_t(len), 1);
  return b;
}

enum class Layout { contiguous, padded_rows, heads_interleaved, padded_all };
inline const char* layout_name(Layout l) {
  switch (l) {
    case Layout::contiguous: return "contig";
    case Layout::padded_rows: return "padrows";
    case Layout::heads_interleaved: return "BNHD";
    case Layout::padded_all: return "padall";
  }
  return "?";
}

// A [B, H, N, D] tensor in one of the layouts, allocated to exactly its extent; padding filled
// with `pad`, elements with `fill`.
template <class T>
Buf<T> tensor(const char* name, int64_t B, int64_t H, int64_t N, int64_t D, Layout layout, Bytes& in,
              T pad, T fill, BHND<T>* view) {
  int64_t sn = D, sh = N * D, sb = H * N * D;
  switch (layout) {
    case Layout::contiguous: break;
    case Layout::padded_rows:
      sn = D + 1 + in.below(9);
      sh = N * sn;
      sb = H * sh;
      break;
    case Layout::heads_interleaved:  // [B, N, H, D] storage seen as [B, H, N, D]
      sh = D + in.below(3);
      sn = H * sh;
      sb = N * sn + in.below(3);
      break;
    case Layout::padded_all:
      sn = D + 1 + in.below(5);
      sh = N * sn + 1 + in.below(5);
      sb = H * sh + 1 + in.below(5);
      break;
  }
  const bool empty = B == 0 || H == 0 || N == 0 || D == 0;
  const int64_t len = empty ? 0 : (B - 1) * sb + (H - 1) * sh + (N - 1) * sn + D;
  Buf<T> b;
  b.name = name;
  b.len = len;
  b.data.reset(new T[size_t(len)]);
  std::fill_n(b.data.get(), len, pad);
  b.inside.assign(size_t(len), 0);
  for (int64_t bi = 0; bi < B; ++bi)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t n = 0; n < N; ++n)
        for (int64_t d = 0; d < D; ++d) {
          const int64_t o = bi * sb + h * sh + n * sn + d;
          b.inside[size_t(o)] = 1;
          b.data[size_t(o)] = fill;
        }
  *view = BHND<T>{b.ptr(), B, H, N, D, sb, sh, sn};
  return b;
}

// ---------------------------------------------------------------------------------------------
// Values: a regime for the magnitudes and a rate of non-finite values sprinkled in.
struct ValueSpec {
  int regime = 0;
  int special_log2 = -1;  // one element in 2^special_log2 is NaN, +inf or -inf; -1: none
  uint64_t seed = 0;
};

const char* const kRegimeNames[] = {"normal", "uniform10", "small", "huge", "tiny", "zeros", "constant", "ties"};
constexpr int kRegimes = 8;

inline ValueSpec value_spec(Bytes& in, uint64_t seed) {
  ValueSpec v;
  v.regime = in.u8() % kRegimes;
  const uint8_t s = in.u8();
  v.special_log2 = s < 208 ? -1 : (s - 208) % 8;  // about one tensor in five gets non-finite values
  v.seed = seed;
  return v;
}

inline double draw(const ValueSpec& spec, SplitMix64& rng, NormalStream& normal, double constant) {
  if (spec.special_log2 >= 0 && (rng.next() & ((uint64_t(1) << spec.special_log2) - 1)) == 0) {
    switch (rng.next() % 3) {
      case 0: return std::numeric_limits<double>::quiet_NaN();
      case 1: return INFINITY;
      default: return -INFINITY;
    }
  }
  switch (spec.regime) {
    case 0: return normal.next();
    case 1: return 20.0 * rng.uniform() - 10.0;
    case 2: return 1e-3 * normal.next();
    case 3: return (rng.next() & 1) ? normal.next() : (rng.next() & 1 ? 1e30 : -1e30) * rng.uniform();
    case 4: return (rng.next() & 1 ? 1e-30 : 1e-41) * normal.next();  // 1e-41: float subnormals
    case 5: return 0.0;
    case 6: return constant;
    default: return std::round(2.0 * normal.next());  // few distinct values: exact ties
  }
}

// Fills the elements of a buffer (not its padding); `transform` maps each drawn value.
template <class T, class F>
void fill_values(Buf<T>& b, const ValueSpec& spec, F transform) {
  SplitMix64 rng{spec.seed};
  NormalStream normal{SplitMix64{spec.seed ^ 0x5bd1e995ull}};
  const double constant = normal.next();
  for (int64_t i = 0; i < b.len; ++i)
    if (b.inside[size_t(i)]) b.data[size_t(i)] = T(transform(draw(spec, rng, normal, constant)));
}
template <class T>
void fill_values(Buf<T>& b, const ValueSpec& spec) {
  fill_values(b, spec, [](double x) { return x; });
}

// Finite, and |x| <= 10: the inputs for which every output must be finite.
template <class T>
bool moderate(const Buf<T>& b) {
  for (int64_t i = 0; i < b.len; ++i)
    if (b.inside[size_t(i)] && !(std::abs(double(b.data[size_t(i)])) <= 10.0)) return false;
  return true;
}

// ---------------------------------------------------------------------------------------------
// Checks after a call.
template <class T>
void snapshot(Buf<T>& b) { b.snapshot.assign(b.data.get(), b.data.get() + b.len); }

// Inputs: not one bit changed, padding included.
template <class T>
void check_unchanged(const Buf<T>& b) {
  for (int64_t i = 0; i < b.len; ++i)
    if (!same_bits(b.data[size_t(i)], b.snapshot[size_t(i)]))
      fail("input %s changed at element %lld of %lld%s", b.name.c_str(), (long long)i, (long long)b.len,
           b.inside[size_t(i)] ? "" : " (padding)");
}

// Outputs: padding untouched, every element written, no input padding read into them.
template <class T>
void check_output(const Buf<T>& b) {
  for (int64_t i = 0; i < b.len; ++i) {
    const T x = b.data[size_t(i)];
    if (!b.inside[size_t(i)]) {
      if (!same_bits(x, output_pad<T>()))
        fail("output %s: padding element %lld of %lld overwritten", b.name.c_str(), (long long)i, (long long)b.len);
    } else if (same_bits(x, output_pad<T>())) {
      fail("output %s: element %lld of %lld never written", b.name.c_str(), (long long)i, (long long)b.len);
    } else if (same_bits(x, input_pad<T>())) {
      fail("output %s: element %lld holds an input's padding marker (padding was read)", b.name.c_str(),
           (long long)i);
    }
  }
}

// Outputs that must be finite (given finite, moderate inputs); `allow_minus_inf` for the
// logsumexp of rows with no key.
template <class T>
void check_finite(const Buf<T>& b, bool allow_minus_inf = false) {
  for (int64_t i = 0; i < b.len; ++i) {
    const double x = double(b.data[size_t(i)]);
    if (b.inside[size_t(i)] && !std::isfinite(x) && !(allow_minus_inf && x == -INFINITY))
      fail("output %s: element %lld = %g is not finite though every input is finite and moderate",
           b.name.c_str(), (long long)i, x);
  }
}

template <class T>
constexpr double kEps = std::numeric_limits<T>::epsilon();
// Underflow: a product or sum below T's normal range loses up to the smallest normal number
// (flushed to zero or subnormal), whatever its relative size; the references' tolerances add
// this much per operation an output goes through (the tiny regime reaches it).
template <class T>
constexpr double kTiny = std::numeric_limits<T>::min();

// A mask [B, N] with batch stride >= N (gaps hold the input padding marker, nonzero).
struct Mask {
  Buf<uint8_t> buf;
  int64_t stride = 0;
  bool present = false;
  bool allowed(int64_t b, int64_t j) const { return !present || buf.data[size_t(b * stride + j)] != 0; }
};

inline Mask make_mask(Bytes& in, int64_t B, int64_t N, uint64_t seed, const char* name = "mask") {
  Mask m;
  const uint8_t mode = in.u8() % 6;  // 0: none, 1: all keep, 2-3: random holes, 4: one batch all masked, 5: all masked
  if (mode == 0) {
    describe("%s=none", name);
    return m;
  }
  m.present = true;
  m.stride = N + (in.u8() & 1 ? in.below(4) : 0);
  const int64_t len = B == 0 || N == 0 ? 0 : (B - 1) * m.stride + N;
  m.buf.name = name;
  m.buf.len = len;
  m.buf.data.reset(new uint8_t[size_t(len)]);
  std::fill_n(m.buf.data.get(), len, input_pad<uint8_t>());
  m.buf.inside.assign(size_t(len), 0);
  SplitMix64 rng{seed};
  const int64_t dead_batch = B > 0 ? in.below(B) : 0;
  const uint64_t hole_rate = 1 + in.below(4);  // one key in 2^rate masked... roughly
  for (int64_t b = 0; b < B; ++b)
    for (int64_t j = 0; j < N; ++j) {
      uint8_t keep = 1;
      if (mode == 2 || mode == 3) keep = (rng.next() & ((uint64_t(1) << hole_rate) - 1)) != 0;
      if ((mode == 4 && b == dead_batch) || mode == 5) keep = 0;
      // Nonzero values other than 1 also mean "takes part".
      m.buf.data[size_t(b * m.stride + j)] = keep ? uint8_t(1 + (rng.next() % 3 == 0 ? rng.next() % 255 : 0)) : 0;
      m.buf.inside[size_t(b * m.stride + j)] = 1;
    }
  static const char* const kModes[] = {"none", "ones", "holes", "holes", "deadbatch", "allmasked"};
  describe("%s=%s", name, kModes[mode]);
  snapshot(m.buf);
  return m;
}

// A [rows, cols] matrix whose rows are `stride` >= cols apart (0 = one row shared), exact extent.
template <class T>
Buf<T> rows_buffer(const char* name, int64_t rows, int64_t cols, int64_t stride) {
  Buf<T> b;
  b.name = name;
  b.len = rows == 0 || cols == 0 ? 0 : (stride == 0 ? cols : (rows - 1) * stride + cols);
  b.data.reset(new T[size_t(b.len)]);
  std::fill_n(b.data.get(), b.len, input_pad<T>());
  b.inside.assign(size_t(b.len), 0);
  for (int64_t r = 0; r < (stride == 0 ? std::min<int64_t>(rows, 1) : rows); ++r)
    for (int64_t c = 0; c < cols; ++c) b.inside[size_t(r * stride + c)] = 1;
  return b;
}

inline Layout pick_layout(Bytes& in) {
  static const Layout kLayouts[] = {Layout::contiguous, Layout::padded_rows, Layout::heads_interleaved,
                                    Layout::padded_all};
  return in.pick(kLayouts);
}

inline int pick_threads(Bytes& in) { return 1 + (in.u8() & 1); }

// Element (b, h, n, d) of a view, read as double.
template <class T>
double at(const BHND<T>& v, int64_t b, int64_t h, int64_t n, int64_t d) { return double(v.row(b, h, n)[d]); }

// An input tensor: layout and values decoded, snapshot taken.
template <class T>
Buf<T> input_tensor(const char* name, Bytes& in, uint64_t seed, int64_t B, int64_t H, int64_t N, int64_t D,
                    BHND<const T>* view, bool allow_nonfinite = true) {
  const Layout layout = pick_layout(in);
  BHND<T> v;
  Buf<T> b = tensor<T>(name, B, H, N, D, layout, in, input_pad<T>(), T(0), &v);
  ValueSpec spec = value_spec(in, seed);
  if (!allow_nonfinite) spec.special_log2 = -1;
  fill_values(b, spec);
  describe("%s:%s/%s%s", name, layout_name(layout), kRegimeNames[spec.regime],
           spec.special_log2 >= 0 ? "+nonfinite" : "");
  snapshot(b);
  *view = BHND<const T>{v.data, v.B, v.H, v.N, v.D, v.sb, v.sh, v.sn};
  return b;
}

template <class T>
Buf<T> output_tensor(const char* name, Bytes& in, int64_t B, int64_t H, int64_t N, int64_t D, BHND<T>* view,
                     bool strided = true) {
  const Layout layout = strided ? pick_layout(in) : Layout::contiguous;
  Buf<T> b = tensor<T>(name, B, H, N, D, layout, in, output_pad<T>(), output_pad<T>(), view);
  if (layout != Layout::contiguous) describe("%s:%s", name, layout_name(layout));
  return b;
}

template <class T>
BHND<const T> as_const(const BHND<T>& v) { return BHND<const T>{v.data, v.B, v.H, v.N, v.D, v.sb, v.sh, v.sn}; }

inline const char* type_name(float) { return "float"; }
inline const char* type_name(double) { return "double"; }

// The cases, one per kernel (cases_*.cpp), instantiated for float and double.
template <class T> void softmax_case(Bytes& in, uint64_t seed, Stats& st);
template <class T> void shatter_case(Bytes& in, uint64_t seed, Stats& st);
template <class T> void kernelized_case(Bytes& in, uint64_t seed, Stats& st);
template <class T> void feature_map_case(Bytes& in, uint64_t seed, Stats& st);
template <class T> void kernelized_rpe_case(Bytes& in, uint64_t seed, Stats& st);
template <class T> void toeplitz_case(Bytes& in, uint64_t seed, Stats& st);
template <class T> void toeplitz2d_case(Bytes& in, uint64_t seed, Stats& st);
template <class T> void fft_case(Bytes& in, uint64_t seed, Stats& st);
template <class T> void yoso_lsh_case(Bytes& in, uint64_t seed, Stats& st);
template <class T> void yoso_expectation_case(Bytes& in, uint64_t seed, Stats& st);
template <class T> void dropout_case(Bytes& in, uint64_t seed, Stats& st);

}  // namespace kernel_fuzz
