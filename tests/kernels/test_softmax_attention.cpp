// Fused softmax attention kernels against a dense fp64 reference written for clarity.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/common/block_gemm.h"
#include "kernels/softmax_attention/softmax_attention.h"
#include "reference.h"

using namespace longattn::kernels;

namespace {

// ---------------------------------------------------------------------------------------------
// Reference: plain softmax(scale * q.k + bias) over the allowed keys, and its analytic gradient.
struct RefResult {
  std::vector<double> out, lse, dq, dk, dv, dbias;  // contiguous [B,H,Nq,Dv], [B,H,Nq], ...
};

struct Shape {
  int64_t B, H, Nq, Nk, D, Dv;
};

// All inputs contiguous, in double. mask: [B, Nk] or empty; bias: [H, 2N-1] or empty.
RefResult reference(const Shape& s, const std::vector<double>& q, const std::vector<double>& k,
                    const std::vector<double>& v, const std::vector<uint8_t>& mask,
                    const std::vector<double>& bias, bool causal, double scale,
                    const std::vector<double>& dout) {
  const int64_t B = s.B, H = s.H, Nq = s.Nq, Nk = s.Nk, D = s.D, Dv = s.Dv;
  RefResult r;
  r.out.assign(B * H * Nq * Dv, 0);
  r.lse.assign(B * H * Nq, -INFINITY);
  r.dq.assign(B * H * Nq * D, 0);
  r.dk.assign(B * H * Nk * D, 0);
  r.dv.assign(B * H * Nk * Dv, 0);
  r.dbias.assign(bias.size(), 0);
  std::vector<double> logit(Nk), prob(Nk), dp(Nk);
  std::vector<bool> allowed(Nk);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      const double* Q = q.data() + (b * H + h) * Nq * D;
      const double* K = k.data() + (b * H + h) * Nk * D;
      const double* V = v.data() + (b * H + h) * Nk * Dv;
      const double* dO = dout.data() + (b * H + h) * Nq * Dv;
      for (int64_t i = 0; i < Nq; ++i) {
        double mx = -INFINITY;
        for (int64_t j = 0; j < Nk; ++j) {
          allowed[j] = (mask.empty() || mask[b * Nk + j]) && (!causal || j <= i);
          double x = 0;
          for (int64_t d = 0; d < D; ++d) x += Q[i * D + d] * K[j * D + d];
          x *= scale;
          if (!bias.empty()) x += bias[h * (2 * Nq - 1) + (j - i + Nq - 1)];
          logit[j] = x;
          if (allowed[j]) mx = std::max(mx, x);
        }
        if (mx == -INFINITY) continue;  // no key: output 0, no gradient
        double z = 0;
        for (int64_t j = 0; j < Nk; ++j) z += allowed[j] ? std::exp(logit[j] - mx) : 0.0;
        r.lse[(b * H + h) * Nq + i] = mx + std::log(z);
        for (int64_t j = 0; j < Nk; ++j) prob[j] = allowed[j] ? std::exp(logit[j] - mx) / z : 0.0;
        double* O = r.out.data() + ((b * H + h) * Nq + i) * Dv;
        for (int64_t j = 0; j < Nk; ++j)
          for (int64_t c = 0; c < Dv; ++c) O[c] += prob[j] * V[j * Dv + c];
        // Gradient of softmax: dlogit_j = p_j (dp_j - sum_l p_l dp_l), dp_j = dO_i . v_j.
        double pdp = 0;
        for (int64_t j = 0; j < Nk; ++j) {
          dp[j] = 0;
          for (int64_t c = 0; c < Dv; ++c) dp[j] += dO[i * Dv + c] * V[j * Dv + c];
          pdp += prob[j] * dp[j];
        }
        for (int64_t j = 0; j < Nk; ++j) {
          if (!allowed[j]) continue;
          const double ds = prob[j] * (dp[j] - pdp);
          for (int64_t c = 0; c < Dv; ++c)
            r.dv[((b * H + h) * Nk + j) * Dv + c] += prob[j] * dO[i * Dv + c];
          for (int64_t d = 0; d < D; ++d) {
            r.dq[((b * H + h) * Nq + i) * D + d] += scale * ds * K[j * D + d];
            r.dk[((b * H + h) * Nk + j) * D + d] += scale * ds * Q[i * D + d];
          }
          if (!bias.empty()) r.dbias[h * (2 * Nq - 1) + (j - i + Nq - 1)] += ds;
        }
      }
    }
  return r;
}

// ---------------------------------------------------------------------------------------------
// Strided storage of a logical [B, H, N, D] tensor.
enum class Layout { kContiguous, kBNHD, kPadded };  // BNHD: [B,N,H,D] viewed as BHND

template <class T>
struct Stored {
  std::vector<T> buf;
  BHND<T> view;
  Stored(const std::vector<double>& logical, int64_t B, int64_t H, int64_t N, int64_t D,
         Layout layout) {
    int64_t pad = layout == Layout::kPadded ? 3 : 0;
    buf.assign(B * H * N * (D + pad) + 1, T(12345));  // junk in the gaps must not be read
    if (layout == Layout::kBNHD)
      view = BHND<T>{buf.data(), B, H, N, D, N * H * D, D, H * D};
    else
      view = BHND<T>{buf.data(), B, H, N, D, H * N * (D + pad), N * (D + pad), D + pad};
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t n = 0; n < N; ++n)
          for (int64_t d = 0; d < D; ++d)
            view.row(b, h, n)[d] = T(logical[((b * H + h) * N + n) * D + d]);
  }
  BHND<const T> cview() const {
    return BHND<const T>{view.data, view.B, view.H, view.N, view.D, view.sb, view.sh, view.sn};
  }
};

struct Flags {
  bool causal = false, mask = false, bias = false;
  Layout layout = Layout::kContiguous;
};

// Masks with every hard case: a batch element whose keys are all masked, the first keys masked
// (with causal, the first query rows then see nothing), and a run of 310 masked keys that
// covers a whole key block when Nk is large.
std::vector<uint8_t> make_mask(int64_t B, int64_t Nk, uint64_t seed) {
  auto u = testing_ref::random_vector<double>(B * Nk, seed, 0.0, 1.0);
  std::vector<uint8_t> m(B * Nk);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t j = 0; j < Nk; ++j) {
      bool keep = u[b * Nk + j] < 0.75;
      if (b == 1) keep = false;
      if (j < 3 || (j >= 250 && j < 560)) keep = false;
      m[b * Nk + j] = keep;
    }
  return m;
}

template <class T>
struct Tolerance;
// float: logits carry ~D*eps relative rounding, exp2 ~2e-7, and GEMM sums of up to ~1000 terms
// accumulate worst-case N*eps = 6e-5 relative to the tensor's scale; 3e-4 leaves margin while
// any logic error (a missed mask, a wrong bias index) moves results by 1e-3 or far more.
template <>
struct Tolerance<float> {
  static constexpr double value = 3e-4;
};
// double: same analysis with eps = 1.1e-16 gives ~1e-13; 1e-9 is generous yet tight.
template <>
struct Tolerance<double> {
  static constexpr double value = 1e-9;
};

// max |a - ref| / max(1, max |ref|): errors measured against the tensor's own scale, because
// gradient entries can cancel to near zero where relative error means nothing.
template <class A>
double scaled_error(const A& a, const std::vector<double>& ref) {
  double scale = 1, worst = 0;
  for (double x : ref) scale = std::max(scale, std::abs(x));
  for (size_t i = 0; i < ref.size(); ++i) {
    double d = std::abs(double(a[i]) - ref[i]);
    if (!(d <= worst)) worst = std::isnan(d) ? INFINITY : d;
  }
  return worst / scale;
}

template <class T>
struct Run {
  std::vector<T> out, lse, dq, dk, dv, dbias;
};

template <class T>
Run<T> run_kernels(const Shape& s, const Flags& f, const Stored<T>& q, const Stored<T>& k,
                   const Stored<T>& v, const std::vector<uint8_t>& mask,
                   const std::vector<T>& bias, const Stored<T>& dout, double scale, int threads) {
  SoftmaxAttentionParams<T> p;
  p.q = q.cview();
  p.k = k.cview();
  p.v = v.cview();
  p.key_padding_mask = f.mask ? mask.data() : nullptr;
  p.mask_stride_b = s.Nk;
  p.rel_bias = f.bias ? bias.data() : nullptr;
  p.rel_bias_stride_h = 2 * s.Nq - 1;
  p.causal = f.causal;
  p.scale = scale;
  p.threads = threads;
  Run<T> r;
  r.out.assign(s.B * s.H * s.Nq * s.Dv, T(NAN));  // the kernel must write every element
  r.lse.assign(s.B * s.H * s.Nq, T(NAN));
  auto out = BHND<T>::contiguous(r.out.data(), s.B, s.H, s.Nq, s.Dv);
  softmax_attention_forward(p, out, r.lse.data());

  r.dq.assign(s.B * s.H * s.Nq * s.D, T(NAN));
  r.dk.assign(s.B * s.H * s.Nk * s.D, T(NAN));
  r.dv.assign(s.B * s.H * s.Nk * s.Dv, T(NAN));
  r.dbias.assign(f.bias ? bias.size() : 0, T(NAN));
  SoftmaxAttentionGrads<T> g;
  g.out = BHND<const T>::contiguous(r.out.data(), s.B, s.H, s.Nq, s.Dv);
  g.grad_out = dout.cview();
  g.lse = r.lse.data();
  g.grad_q = BHND<T>::contiguous(r.dq.data(), s.B, s.H, s.Nq, s.D);
  g.grad_k = BHND<T>::contiguous(r.dk.data(), s.B, s.H, s.Nk, s.D);
  g.grad_v = BHND<T>::contiguous(r.dv.data(), s.B, s.H, s.Nk, s.Dv);
  g.grad_rel_bias = f.bias ? r.dbias.data() : nullptr;
  softmax_attention_backward(p, g);
  return r;
}

std::string describe(const Shape& s, const Flags& f) {
  return "B=" + std::to_string(s.B) + " H=" + std::to_string(s.H) + " Nq=" + std::to_string(s.Nq) +
         " Nk=" + std::to_string(s.Nk) + " D=" + std::to_string(s.D) + " Dv=" +
         std::to_string(s.Dv) + " causal=" + std::to_string(f.causal) +
         " mask=" + std::to_string(f.mask) + " bias=" + std::to_string(f.bias) +
         " layout=" + std::to_string(int(f.layout));
}

template <class T>
void check_case(const Shape& s, const Flags& f, uint64_t seed, double scale = 0,
                double bias_slope = 0) {
  SCOPED_TRACE(describe(s, f));
  if (scale == 0) scale = 1.0 / std::sqrt(double(s.D));
  auto q = testing_ref::normal_vector<double>(s.B * s.H * s.Nq * s.D, seed + 1);
  auto k = testing_ref::normal_vector<double>(s.B * s.H * s.Nk * s.D, seed + 2);
  auto v = testing_ref::normal_vector<double>(s.B * s.H * s.Nk * s.Dv, seed + 3);
  auto dout = testing_ref::normal_vector<double>(s.B * s.H * s.Nq * s.Dv, seed + 4);
  auto bias = f.bias ? testing_ref::normal_vector<double>(s.H * (2 * s.Nq - 1), seed + 5, 2.0)
                     : std::vector<double>{};
  for (size_t t = 0; t < bias.size(); ++t)  // + slope * (j - i)
    bias[t] += bias_slope * double(int64_t(t % (2 * s.Nq - 1)) - (s.Nq - 1));
  auto mask = f.mask ? make_mask(s.B, s.Nk, seed + 6) : std::vector<uint8_t>{};
  // The reference sees the inputs rounded to T, as the kernel does.
  auto round = [](std::vector<double> x) {
    for (auto& e : x) e = double(T(e));
    return x;
  };
  q = round(q), k = round(k), v = round(v), dout = round(dout), bias = round(bias);
  const RefResult ref = reference(s, q, k, v, mask, bias, f.causal, scale, dout);

  Stored<T> sq(q, s.B, s.H, s.Nq, s.D, f.layout), sk(k, s.B, s.H, s.Nk, s.D, f.layout),
      sv(v, s.B, s.H, s.Nk, s.Dv, f.layout), sd(dout, s.B, s.H, s.Nq, s.Dv, f.layout);
  const std::vector<T> tbias(bias.begin(), bias.end());
  const Run<T> got = run_kernels(s, f, sq, sk, sv, mask, tbias, sd, scale, 2);

  const double tol = Tolerance<T>::value;
  EXPECT_LE(scaled_error(got.out, ref.out), tol) << "out";
  EXPECT_LE(scaled_error(got.dq, ref.dq), tol) << "grad q";
  EXPECT_LE(scaled_error(got.dk, ref.dk), tol) << "grad k";
  EXPECT_LE(scaled_error(got.dv, ref.dv), tol) << "grad v";
  if (f.bias) {
    EXPECT_LE(scaled_error(got.dbias, ref.dbias), tol) << "grad rel_bias";
  }
  // lse: finite where the reference is, -inf exactly where no key takes part.
  for (size_t i = 0; i < ref.lse.size(); ++i) {
    if (ref.lse[i] == -INFINITY) {
      ASSERT_EQ(got.lse[i], T(-INFINITY)) << "row " << i;
      for (int64_t c = 0; c < s.Dv; ++c) ASSERT_EQ(got.out[i * s.Dv + c], T(0)) << "row " << i;
      for (int64_t c = 0; c < s.D; ++c) ASSERT_EQ(got.dq[i * s.D + c], T(0)) << "row " << i;
    } else {
      ASSERT_NEAR(got.lse[i], ref.lse[i], tol * std::max(1.0, std::abs(ref.lse[i])));
    }
  }
}

const Layout kLayouts[] = {Layout::kContiguous, Layout::kBNHD, Layout::kPadded};

// The grid: D in {1,16,59,64,128}, N in {1,2,97,128}, every flag combination, B and H
// in {1,3} (rotated through the flag combinations so each (D, N) meets all four), layouts
// rotated too. float runs the whole grid; double (the portable code path) runs half of the
// flag combinations of each (D, N), alternating, so every combination still meets every D and
// N. N = 1025 follows in its own test, subsampled to keep the suite fast.
template <class T>
void grid_small_n(bool half) {
  int counter = 0;
  for (int64_t D : {1, 16, 59, 64, 128})
    for (int64_t N : {1, 2, 97, 128})
      for (int flags = 0; flags < 8; ++flags, ++counter) {
        if (half && (flags + D + N) % 2) continue;
        const int64_t B = (counter & 1) ? 3 : 1, H = (counter & 2) ? 3 : 1;
        Flags f{bool(flags & 1), bool(flags & 2), bool(flags & 4), kLayouts[counter % 3]};
        check_case<T>({B, H, N, N, D, D}, f, 1000 + counter);
      }
}

TEST(SoftmaxAttention, GridSmallNFloat) { grid_small_n<float>(false); }
TEST(SoftmaxAttention, GridSmallNDouble) { grid_small_n<double>(true); }

// N = 1025 (several key and query blocks, ragged last block, a whole masked key block): every
// D, the eight flag combinations spread over them, B and H in {1, 3}.
TEST(SoftmaxAttention, GridLargeN) {
  const int64_t D[] = {1, 16, 59, 64, 128, 32, 16, 1};
  for (int flags = 0; flags < 8; ++flags) {
    Flags f{bool(flags & 1), bool(flags & 2), bool(flags & 4), kLayouts[flags % 3]};
    const int64_t B = flags == 3 ? 3 : 1, H = flags == 6 ? 3 : 1;
    check_case<float>({B, H, 1025, 1025, D[flags], D[flags]}, f, 2000 + flags);
  }
  check_case<double>({1, 1, 1025, 1025, 16, 16}, {true, true, true, Layout::kBNHD}, 2100);
}

// Nq != Nk (no causal, no bias), with and without mask, value dims unlike the key dims, and
// empty key or query sets (every output row then zero, lse -inf).
TEST(SoftmaxAttention, DifferentQueryAndKeyLengths) {
  const Shape shapes[] = {{1, 3, 97, 128, 16, 16}, {3, 1, 128, 1, 59, 7}, {1, 1, 1, 97, 64, 128},
                          {3, 3, 2, 300, 16, 1},   {1, 2, 300, 700, 32, 48},
                          {2, 2, 5, 0, 8, 8},      {2, 1, 0, 5, 8, 8}};  // no keys; no queries
  int counter = 0;
  for (const Shape& s : shapes)
    for (bool mask : {false, true}) {
      Flags f{false, mask, false, kLayouts[counter % 3]};
      check_case<float>(s, f, 3000 + counter);
      check_case<double>(s, f, 3100 + counter++);
    }
}

// Logits of magnitude ~100: exp would overflow float without the running max.
TEST(SoftmaxAttention, LargeLogitsStayFinite) {
  check_case<float>({1, 2, 300, 300, 16, 16}, {true, true, true, Layout::kContiguous}, 4000, 25.0);
}

// A bias growing with j - i by 0.5 per key: every key block's logits outgrow the running max
// of the previous ones by ~64 (far past exp's float range), so the forward's online softmax
// must move its reference block after block.
TEST(SoftmaxAttention, LogitsGrowingAcrossKeyBlocks) {
  check_case<float>({1, 2, 700, 700, 32, 32}, {false, true, true, Layout::kContiguous}, 4100, 0, 0.5);
  check_case<float>({1, 1, 700, 700, 16, 16}, {true, false, true, Layout::kBNHD}, 4200, 0, 0.5);
  check_case<double>({1, 1, 300, 300, 16, 16}, {false, false, true, Layout::kContiguous}, 4300, 0, 0.5);
}

// Causal: an inf or NaN in a later key's k or v never reaches an earlier query's output, nor,
// when only earlier outputs carry a gradient, an earlier query's gradient (the tiles that the
// causal mask cuts take the guarded products of kernels/common/guarded_products.h).
template <class T>
void check_future_non_finite(int64_t N, int64_t pos, bool in_v, double value) {
  const Shape s{1, 2, N, N, 16, 8};
  const Flags f{true, false, true, Layout::kContiguous};
  SCOPED_TRACE(describe(s, f) + " pos=" + std::to_string(pos) + (in_v ? " v=" : " k=") + std::to_string(value));
  auto gen = [](int64_t n, uint64_t seed) { return testing_ref::normal_vector<double>(n, seed); };
  auto q64 = gen(s.B * s.H * N * s.D, 11), k64 = gen(s.B * s.H * N * s.D, 12);
  auto v64 = gen(s.B * s.H * N * s.Dv, 13), d64 = gen(s.B * s.H * N * s.Dv, 14);
  for (int64_t h = 0; h < s.H; ++h)  // only outputs before pos carry a gradient
    for (int64_t i = pos; i < N; ++i)
      for (int64_t c = 0; c < s.Dv; ++c) d64[(h * N + i) * s.Dv + c] = 0;
  auto bias64 = gen(s.H * (2 * N - 1), 15);
  std::vector<T> bias(bias64.begin(), bias64.end());
  const std::vector<uint8_t> no_mask;
  const Stored<T> q(q64, s.B, s.H, N, s.D, f.layout), d(d64, s.B, s.H, N, s.Dv, f.layout);
  const Stored<T> k(k64, s.B, s.H, N, s.D, f.layout), v(v64, s.B, s.H, N, s.Dv, f.layout);
  (in_v ? v64[(0 * N + pos) * s.Dv + 1] : k64[(0 * N + pos) * s.D + 1]) = value;  // head 0 only
  const Stored<T> kb(k64, s.B, s.H, N, s.D, f.layout), vb(v64, s.B, s.H, N, s.Dv, f.layout);
  const Run<T> clean = run_kernels(s, f, q, k, v, no_mask, bias, d, 0.25, 2);
  const Run<T> dirty = run_kernels(s, f, q, kb, vb, no_mask, bias, d, 0.25, 2);
  for (int64_t h = 0; h < s.H; ++h)
    for (int64_t i = 0; i < pos; ++i) {
      for (int64_t c = 0; c < s.Dv; ++c) {
        const size_t e = size_t((h * N + i) * s.Dv + c);
        ASSERT_TRUE(std::isfinite(dirty.out[e])) << "out h=" << h << " i=" << i;
        ASSERT_NEAR(dirty.out[e], clean.out[e], 1e-5 * (1 + std::abs(clean.out[e]))) << "out h=" << h << " i=" << i;
      }
      for (int64_t c = 0; c < s.D; ++c) {
        const size_t e = size_t((h * N + i) * s.D + c);
        ASSERT_TRUE(std::isfinite(dirty.dq[e])) << "dq h=" << h << " i=" << i;
        ASSERT_NEAR(dirty.dq[e], clean.dq[e], 1e-5 * (1 + std::abs(clean.dq[e]))) << "dq h=" << h << " i=" << i;
      }
    }
}

TEST(SoftmaxAttention, CausalFutureNonFiniteNeverReachesEarlierRows) {
  for (double value : {double(NAN), double(INFINITY), -double(INFINITY)})
    for (bool in_v : {false, true}) {
      check_future_non_finite<float>(9, 5, in_v, value);
      check_future_non_finite<float>(300, 150, in_v, value);
      check_future_non_finite<double>(300, 299, in_v, value);
    }
}

// Every result must be bit-identical with 1 and 2 threads (fixed work split and reductions).
template <class T>
void check_thread_independence(const Shape& s, const Flags& f) {
  SCOPED_TRACE(describe(s, f));
  auto gen = [](int64_t n, uint64_t seed) { return testing_ref::normal_vector<double>(n, seed); };
  Stored<T> q(gen(s.B * s.H * s.Nq * s.D, 1), s.B, s.H, s.Nq, s.D, f.layout);
  Stored<T> k(gen(s.B * s.H * s.Nk * s.D, 2), s.B, s.H, s.Nk, s.D, f.layout);
  Stored<T> v(gen(s.B * s.H * s.Nk * s.Dv, 3), s.B, s.H, s.Nk, s.Dv, f.layout);
  Stored<T> d(gen(s.B * s.H * s.Nq * s.Dv, 4), s.B, s.H, s.Nq, s.Dv, f.layout);
  auto bias64 = gen(s.H * (2 * s.Nq - 1), 5);
  std::vector<T> bias(bias64.begin(), bias64.end());
  auto mask = make_mask(s.B, s.Nk, 6);
  const double scale = 0.125;
  Run<T> one = run_kernels(s, f, q, k, v, mask, bias, d, scale, 1);
  Run<T> two = run_kernels(s, f, q, k, v, mask, bias, d, scale, 2);
  auto same = [](const std::vector<T>& a, const std::vector<T>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
  };
  EXPECT_TRUE(same(one.out, two.out));
  EXPECT_TRUE(same(one.lse, two.lse));
  EXPECT_TRUE(same(one.dq, two.dq));
  EXPECT_TRUE(same(one.dk, two.dk));
  EXPECT_TRUE(same(one.dv, two.dv));
  EXPECT_TRUE(same(one.dbias, two.dbias));
}

// The tile GEMM on its own: every register-tile remainder (m mod 6, n mod 64, vector tails),
// A read row-major and transposed, overwrite and accumulate.
template <class T>
void check_block_gemm() {
  for (int64_t m : {1, 5, 6, 13})
    for (int64_t n : {1, 16, 37, 64, 130})
      for (int64_t k : {1, 9})
        for (bool trans_a : {false, true})
          for (bool acc : {false, true}) {
            const int64_t lda = (trans_a ? m : k) + 2, ldb = n + 3, ldc = n + 1;
            auto A = testing_ref::normal_vector<T>((trans_a ? k : m) * lda, 1);
            auto Bm = testing_ref::normal_vector<T>(k * ldb, 2);
            auto C = testing_ref::normal_vector<T>(m * ldc, 3);
            std::vector<T> want = C;
            for (int64_t i = 0; i < m; ++i)
              for (int64_t j = 0; j < n; ++j) {
                double s = 0;
                for (int64_t p = 0; p < k; ++p)
                  s += double(trans_a ? A[p * lda + i] : A[i * lda + p]) * double(Bm[p * ldb + j]);
                want[i * ldc + j] = T(0.5 * s + (acc ? double(C[i * ldc + j]) : 0.0));
              }
            longattn::kernels::block_gemm(
                m, n, k, T(0.5), A.data(), trans_a ? 1 : lda, trans_a ? lda : 1, Bm.data(), ldb,
                acc, C.data(), ldc);
            // k <= 9 products of unit normals: float rounding stays below 1e-5.
            for (size_t e = 0; e < C.size(); ++e)
              ASSERT_NEAR(C[e], want[e], 1e-5) << m << " " << n << " " << k << " " << e;
          }
}

TEST(SoftmaxAttention, BlockGemmMatchesReference) {
  check_block_gemm<float>();
  check_block_gemm<double>();
}

TEST(SoftmaxAttention, ThreadCountDoesNotChangeResults) {
  // B*H = 1: the backward splits keys into groups with partial dQ / bias sums.
  check_thread_independence<float>({1, 1, 1100, 1100, 64, 64}, {false, true, true});
  // B*H = 6: one item per head in the backward, bias partials reduced over the batch.
  check_thread_independence<float>({2, 3, 400, 400, 32, 32}, {true, false, true});
  check_thread_independence<double>({3, 1, 300, 300, 16, 16}, {true, true, true});
}

}  // namespace
