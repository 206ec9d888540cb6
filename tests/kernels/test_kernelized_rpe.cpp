#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "kernels/kernelized_rpe/kernelized_rpe.h"
#include "reference.h"

using namespace longattn::kernels;

namespace {

// Bias families of issue 12: each a function of the offset r = j - i in [-(N-1), N-1].
enum class Bias { random, ramp, alibi, slope_pos, slope_neg, step };

std::vector<double> make_bias(Bias kind, int64_t H, int64_t N, double size, uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::vector<double> b(H * (2 * N - 1));
  for (int64_t h = 0; h < H; ++h)
    for (int64_t t = 0; t < 2 * N - 1; ++t) {
      const double r = double(t - (N - 1)), u = r / std::max<double>(1, N - 1);  // u in [-1, 1]
      double x = 0;
      switch (kind) {
        case Bias::random: x = size * normal(gen); break;                       // sigma = size
        case Bias::ramp: x = 0.5 * size * u * (h % 2 ? -1 : 1); break;           // spread = size
        case Bias::alibi: x = -size * std::abs(u); break;                        // -s |r|
        case Bias::slope_pos: x = r > 0 ? size * u : 0.0; break;                 // one-sided
        case Bias::slope_neg: x = r < 0 ? size * u : 0.0; break;
        case Bias::step: x = r >= (h % 2 ? 3 : -(N / 3)) ? size : 0.0; break;    // a step
      }
      b[h * (2 * N - 1) + t] = x;
    }
  return b;
}

struct Problem {
  int64_t B, H, N, m, Dv;
  bool causal;
  std::vector<double> a, k, v, bias;  // phi_q, phi_k [B,H,N,m], v [B,H,N,Dv], bias [H,2N-1]
  std::vector<double> ell, mu;        // [B,H,N] key log-scales and eps log-scales, or empty
  std::vector<uint8_t> mask;          // [B, N] or empty
  int threads = 2;
  double eps = 0.0;

  Problem(int64_t B_, int64_t H_, int64_t N_, int64_t m_, int64_t Dv_, bool causal_, uint64_t seed)
      : B(B_), H(H_), N(N_), m(m_), Dv(Dv_), causal(causal_) {
    // Features are nonnegative (as a feature map gives).
    a = testing_ref::random_vector<double>(B * H * N * m, seed, 0.0, 1.0);
    k = testing_ref::random_vector<double>(B * H * N * m, seed + 1, 0.0, 1.0);
    v = testing_ref::random_vector<double>(B * H * N * Dv, seed + 2);
    bias = testing_ref::random_vector<double>(H * (2 * N - 1), seed + 3, -3.0, 0.0);
  }
  bool on(int64_t b, int64_t i, int64_t j) const {
    return (mask.empty() || mask[b * N + j]) && (!causal || j <= i);
  }
  double l(int64_t bh, int64_t j) const { return ell.empty() ? 0.0 : ell[bh * N + j]; }
  // The dense formula, written for clarity in fp64: per row, the weights e^{b[j-i] + l_j} are
  // evaluated relative to the row's largest one (which cancels, and rescales eps e^{mu_i});
  // 0 for rows with no key or a zero denominator.
  std::vector<double> dense() const {
    std::vector<double> z(B * H * N * Dv, 0.0);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t i = 0; i < N; ++i) {
          const int64_t bh = b * H + h;
          double M = -INFINITY;
          for (int64_t j = 0; j < N; ++j)
            if (on(b, i, j)) M = std::max(M, bias[h * (2 * N - 1) + j - i + N - 1] + l(bh, j));
          if (M == -INFINITY) continue;
          std::vector<double> num(Dv, 0.0);
          double den = 0;
          for (int64_t j = 0; j < N; ++j) {
            if (!on(b, i, j)) continue;
            double s = 0;
            for (int64_t f = 0; f < m; ++f) s += a[(bh * N + i) * m + f] * k[(bh * N + j) * m + f];
            s *= std::exp(bias[h * (2 * N - 1) + j - i + N - 1] + l(bh, j) - M);
            den += s;
            for (int64_t d = 0; d < Dv; ++d) num[d] += s * v[(bh * N + j) * Dv + d];
          }
          const double e = eps * std::exp((mu.empty() ? 0.0 : mu[bh * N + i]) - M);
          for (int64_t d = 0; d < Dv; ++d) z[(bh * N + i) * Dv + d] = den + e > 0 ? num[d] / (den + e) : 0.0;
        }
    return z;
  }
  template <class T>
  struct Run {
    std::vector<T> a, k, v, bias, ell, mu, z, den, ga, gk, gv, gb, gl, gm;
    std::vector<uint8_t> direct;
  };
  template <class T>
  KernelizedRpeParams<T> params(Run<T>& r) const {
    KernelizedRpeParams<T> p;
    p.phi_q = BHND<const T>::contiguous(r.a.data(), B, H, N, m);
    p.phi_k = BHND<const T>::contiguous(r.k.data(), B, H, N, m);
    p.v = BHND<const T>::contiguous(r.v.data(), B, H, N, Dv);
    p.rel_bias = r.bias.data();
    p.bias_stride_h = 2 * N - 1;
    p.key_log_scale = ell.empty() ? nullptr : r.ell.data();
    p.eps_log_scale = mu.empty() ? nullptr : r.mu.data();
    p.key_padding_mask = mask.empty() ? nullptr : mask.data();
    p.mask_stride_b = N;
    p.causal = causal;
    p.threads = threads;
    p.eps = eps;
    return p;
  }
  template <class T>
  Run<T> run(const std::vector<double>& gz) const {
    Run<T> r;
    r.a.assign(a.begin(), a.end()), r.k.assign(k.begin(), k.end());
    r.v.assign(v.begin(), v.end()), r.bias.assign(bias.begin(), bias.end());
    r.ell.assign(ell.begin(), ell.end()), r.mu.assign(mu.begin(), mu.end());
    r.z.assign(B * H * N * Dv, T(-9));
    r.den.assign(B * H * N, T(-9));
    r.direct.assign(B * H * N, 9);
    auto p = params(r);
    kernelized_rpe_forward(p, BHND<T>::contiguous(r.z.data(), B, H, N, Dv), {r.den.data(), r.direct.data()});
    if (gz.empty()) return r;
    std::vector<T> g(gz.begin(), gz.end());
    r.ga.assign(a.size(), T(-9)), r.gk.assign(k.size(), T(-9)), r.gv.assign(v.size(), T(-9));
    r.gb.assign(bias.size(), T(-9)), r.gl.assign(B * H * N, T(-9)), r.gm.assign(B * H * N, T(-9));
    KernelizedRpeGrads<T> gr;
    gr.out = BHND<const T>::contiguous(r.z.data(), B, H, N, Dv);
    gr.den = r.den.data();
    gr.direct = r.direct.data();
    gr.grad_out = BHND<const T>::contiguous(g.data(), B, H, N, Dv);
    gr.grad_phi_q = BHND<T>::contiguous(r.ga.data(), B, H, N, m);
    gr.grad_phi_k = BHND<T>::contiguous(r.gk.data(), B, H, N, m);
    gr.grad_v = BHND<T>::contiguous(r.gv.data(), B, H, N, Dv);
    gr.grad_rel_bias = r.gb.data();
    gr.grad_key_log_scale = r.gl.data();
    gr.grad_eps_log_scale = r.gm.data();
    kernelized_rpe_backward(p, gr);
    return r;
  }
};

double max_abs(const std::vector<double>& x) {
  double s = 0;
  for (double v : x) s = std::max(s, std::abs(v));
  return s;
}

template <class T>
std::vector<double> dbl(const std::vector<T>& x) {
  return std::vector<double>(x.begin(), x.end());
}

struct BiasCase {
  Bias kind;
  double size;
  const char* name;
};

const BiasCase kBiasCases[] = {
    {Bias::random, 0.5, "random sigma 0.5"}, {Bias::random, 3.0, "random sigma 3"},
    {Bias::ramp, 20.0, "ramp spread 20"},    {Bias::ramp, 200.0, "ramp spread 200"},
    {Bias::alibi, 60.0, "alibi 60"},         {Bias::slope_pos, 150.0, "one-sided slope +150"},
    {Bias::slope_neg, 150.0, "one-sided slope -150"}, {Bias::step, 40.0, "step 40"},
};

}  // namespace

// Forward against the dense fp64 formula for every bias family, causal or not, masked or not:
// 1e-10 (double) and 1e-4 (float) relative to the output's scale (docs/toeplitz.md: the
// FFT rows are within 2 tau of it by the row check, the direct rows are exact sums).
TEST(KernelizedRpe, MatchesDenseFormulaForEveryBias) {
  int seed = 100;
  for (const BiasCase& bc : kBiasCases)
    for (bool causal : {false, true})
      for (bool masked : {false, true}) {
        const int64_t B = 2, H = 2, N = masked ? 61 : 64, m = 5, Dv = 3;
        Problem pr(B, H, N, m, Dv, causal, ++seed);
        pr.bias = make_bias(bc.kind, H, N, bc.size, seed);
        pr.eps = masked ? 1e-3 : 0.0;
        if (masked) {
          pr.mask.assign(B * N, 1);
          for (int64_t j = 0; j < N; j += 3) pr.mask[j] = 0;  // batch 0: every third key off
          for (int64_t j = 0; j < N / 2; ++j) pr.mask[(B - 1) * N + j] = 0;  // last: first half off
        }
        auto ref = pr.dense();
        const double scale = max_abs(ref);
        const std::string what = std::string(bc.name) + (causal ? " causal" : "") + (masked ? " masked" : "");
        EXPECT_LE(testing_ref::max_scaled_error(pr.run<double>({}).z, ref, 1e-10 * scale, 0), 1.0) << what;
        EXPECT_LE(testing_ref::max_scaled_error(pr.run<float>({}).z, ref, 1e-4 * scale, 0), 1.0) << what;
      }
}

// Mild biases keep the FFT path: no row should need the direct fallback (else the O(N log N)
// claim would be hollow for ordinary inputs), and linear ramps are flattened by the trend.
TEST(KernelizedRpe, OrdinaryAndLinearBiasesStayOnTheFftPath) {
  for (const BiasCase& bc : {BiasCase{Bias::random, 0.5, "random 0.5"}, BiasCase{Bias::ramp, 200.0, "ramp 200"}}) {
    Problem pr(1, 2, 256, 8, 4, false, 5);
    pr.bias = make_bias(bc.kind, 2, 256, bc.size, 6);
    for (auto direct : pr.run<double>({}).direct) EXPECT_EQ(direct, 0) << bc.name << " double";
    int64_t count = 0;
    for (auto direct : pr.run<float>({}).direct) count += direct;
    EXPECT_EQ(count, 0) << bc.name << " float";
  }
}

// Gradients for phi_q, phi_k, v, the bias and both log-scales against central differences of
// the forward in double (step 1e-5: truncation ~1e-10 times third derivatives of order 1;
// tolerance 1e-6), with a mild bias (FFT rows) and a steep one (direct rows too).
TEST(KernelizedRpe, GradientsMatchFiniteDifferences) {
  for (Bias kind : {Bias::random, Bias::ramp, Bias::step})
    for (bool causal : {false, true}) {
      Problem pr(2, 2, 7, 3, 2, causal, 7);
      pr.bias = make_bias(kind, 2, 7, kind == Bias::random ? 1.0 : 80.0, 3);
      pr.threads = 1;  // thousands of tiny forwards: no thread start-up
      pr.eps = 0.3;    // eps enters the denominator: its gradient must follow
      pr.ell = testing_ref::random_vector<double>(2 * 2 * 7, 11, -2.0, 2.0);
      pr.mu = testing_ref::random_vector<double>(2 * 2 * 7, 12, -1.0, 1.0);
      pr.mask.assign(2 * 7, 1);
      pr.mask[7 + 2] = 0;  // one masked key in batch 1
      auto gz = testing_ref::random_vector<double>(2 * 2 * 7 * 2, 8);
      auto r = pr.run<double>(gz);
      auto loss = [&](const Problem& q) {
        auto z = q.run<double>({}).z;
        double s = 0;
        for (size_t i = 0; i < z.size(); ++i) s += z[i] * gz[i];
        return s;
      };
      const double h = 1e-5;
      auto check = [&](std::vector<double> Problem::*field, const std::vector<double>& grad, const char* name) {
        for (size_t i = 0; i < (pr.*field).size(); ++i) {
          Problem p1 = pr, p2 = pr;
          (p1.*field)[i] += h, (p2.*field)[i] -= h;
          EXPECT_NEAR(grad[i], (loss(p1) - loss(p2)) / (2 * h), 1e-6)
              << name << " " << i << " causal=" << causal << " bias " << int(kind);
        }
      };
      check(&Problem::a, r.ga, "phi_q");
      check(&Problem::k, r.gk, "phi_k");
      check(&Problem::v, r.gv, "v");
      check(&Problem::bias, r.gb, "bias");
      check(&Problem::ell, r.gl, "key_log_scale");
      check(&Problem::mu, r.gm, "eps_log_scale");
      if (causal) {
        for (int64_t hh = 0; hh < 2; ++hh)
          for (int64_t rr = 1; rr < 7; ++rr) EXPECT_EQ(r.gb[hh * 13 + 6 + rr], 0.0);
      }
    }
}

// Float gradients against the (finite-difference-checked) double ones for extreme biases:
// 1e-4 relative to each gradient's scale.
TEST(KernelizedRpe, FloatGradientsForEveryBias) {
  int seed = 300;
  for (const BiasCase& bc : kBiasCases)
    for (bool causal : {false, true}) {
      const int64_t B = 1, H = 2, N = 48, m = 4, Dv = 3;
      Problem pr(B, H, N, m, Dv, causal, ++seed);
      pr.bias = make_bias(bc.kind, H, N, bc.size, seed);
      pr.eps = 1e-3;
      auto gz = testing_ref::random_vector<double>(B * H * N * Dv, seed + 50);
      auto rd = pr.run<double>(gz);
      auto rf = pr.run<float>(gz);
      auto cmp = [&](const std::vector<double>& d, const std::vector<float>& f, const char* name) {
        EXPECT_LE(testing_ref::max_scaled_error(f, d, 1e-4 * max_abs(d) + 1e-30, 0), 1.0)
            << bc.name << (causal ? " causal " : " ") << name;
      };
      cmp(rd.z, rf.z, "z");
      cmp(rd.ga, rf.ga, "grad phi_q");
      cmp(rd.gk, rf.gk, "grad phi_k");
      cmp(rd.gv, rf.gv, "grad v");
      cmp(rd.gb, rf.gb, "grad bias");
    }
}

// A bias value of NaN or +inf is the binding's error; -inf is an offset that takes no part.
TEST(KernelizedRpe, MinusInfinityOffsetsTakeNoPart) {
  Problem pr(1, 1, 20, 3, 2, false, 21);
  for (int64_t t = 0; t < 39; t += 2) pr.bias[t] = -INFINITY;
  auto ref = pr.dense();
  auto z = pr.run<double>({}).z;
  EXPECT_LE(testing_ref::max_scaled_error(z, ref, 1e-10 * max_abs(ref), 0), 1.0);
}

// Fully masked batch rows and causal rows before the first key: zeros, never NaN, and zero
// gradients.
TEST(KernelizedRpe, EmptyRowsGiveZeros) {
  for (bool causal : {false, true}) {
    const int64_t N = 40;
    Problem pr(2, 1, N, 4, 3, causal, 3);
    pr.mask.assign(2 * N, 1);
    for (int64_t j = 0; j < N; ++j) pr.mask[j] = 0;        // batch 0: no key at all
    for (int64_t j = 0; j < 10; ++j) pr.mask[N + j] = 0;   // batch 1: keys from 10 on
    auto gz = testing_ref::random_vector<double>(2 * N * 3, 4);
    for (bool dbl_run : {true, false}) {
      std::vector<double> z, ga, gk, gv;
      if (dbl_run) {
        auto r = pr.run<double>(gz);
        z = r.z, ga = r.ga, gk = r.gk, gv = r.gv;
      } else {
        auto r = pr.run<float>(gz);
        z = dbl(r.z), ga = dbl(r.ga), gk = dbl(r.gk), gv = dbl(r.gv);
      }
      for (int64_t i = 0; i < N; ++i)
        for (int64_t d = 0; d < 3; ++d) ASSERT_EQ(z[i * 3 + d], 0.0) << "batch 0, i=" << i;
      for (int64_t i = 0; i < N * 4; ++i) {
        ASSERT_EQ(ga[i], 0.0);
        ASSERT_EQ(gk[i], 0.0);
      }
      for (int64_t i = 0; i < 10; ++i) {
        for (int64_t f = 0; f < 4; ++f) ASSERT_EQ(gk[(N + i) * 4 + f], 0.0);  // masked keys
        if (causal) {
          for (int64_t d = 0; d < 3; ++d) ASSERT_EQ(z[(N + i) * 3 + d], 0.0) << "causal i=" << i;
        }
      }
      for (double x : z) ASSERT_TRUE(std::isfinite(x));
    }
  }
}

// A denominator below float's normal range (subnormal query features, eps = 0): the FFT path
// took 1 / den, which overflowed to inf, and the row came out as inf or NaN. Found by the kernel
// fuzzer (docs/fuzzing.md); such rows now take the direct path. The output is a weighted mean of
// v, so it matches the dense formula (and is finite); so are the gradients of phi_k, v and the
// bias (those of phi_q, ~|v| / den ~ 1e40 here, exceed float's range: no finite answer exists).
TEST(KernelizedRpe, SubnormalDenominatorsGiveFiniteOutputs) {
  for (bool causal : {false, true}) {
    const int64_t N = 63, m = 8, Dv = 7;
    Problem pr(1, 2, N, m, Dv, causal, 11);
    for (double& x : pr.a) x *= 1e-41;  // subnormal in float: a_i . K_j ~ 1e-40
    auto gz = testing_ref::random_vector<double>(2 * N * Dv, 12);
    auto r = pr.run<float>(gz);
    const auto ref = pr.dense();
    for (size_t i = 0; i < ref.size(); ++i)
      ASSERT_NEAR(double(r.z[i]), ref[i], 1e-4 * max_abs(ref)) << "causal=" << causal << " element " << i;
    for (auto* g : {&r.gk, &r.gv, &r.gb})
      for (float x : *g) ASSERT_TRUE(std::isfinite(x)) << "causal=" << causal;
  }
}

// Masked keys are never read: NaN and +-inf in their phi_k, v and log-scale change no output
// and no gradient (bit for bit against zeros there), in both dtypes, causal or not.
TEST(KernelizedRpe, MaskedKeysAreNeverRead) {
  for (bool causal : {false, true})
    for (double bad : {NAN, INFINITY, -INFINITY}) {
      const int64_t N = 30, m = 4, Dv = 2;
      Problem clean(1, 2, N, m, Dv, causal, 41);
      clean.bias = make_bias(Bias::ramp, 2, N, 100.0, 2);  // direct rows too
      clean.eps = 1e-3;
      clean.ell = testing_ref::random_vector<double>(2 * N, 43, -1.0, 1.0);
      clean.mask.assign(N, 1);
      for (int64_t j : {0, 7, 8, 29}) clean.mask[j] = 0;
      Problem dirty = clean;
      for (int64_t h = 0; h < 2; ++h)
        for (int64_t j : {0, 7, 8, 29}) {
          for (int64_t f = 0; f < m; ++f) clean.k[(h * N + j) * m + f] = 0, dirty.k[(h * N + j) * m + f] = bad;
          for (int64_t d = 0; d < Dv; ++d) clean.v[(h * N + j) * Dv + d] = 0, dirty.v[(h * N + j) * Dv + d] = bad;
          clean.ell[h * N + j] = 0, dirty.ell[h * N + j] = bad;
        }
      auto gz = testing_ref::random_vector<double>(2 * N * Dv, 44);
      auto a = clean.run<float>(gz), b = dirty.run<float>(gz);
      EXPECT_EQ(a.z, b.z);
      EXPECT_EQ(a.ga, b.ga);
      EXPECT_EQ(a.gk, b.gk);
      EXPECT_EQ(a.gv, b.gv);
      EXPECT_EQ(a.gb, b.gb);
      EXPECT_EQ(a.gl, b.gl);
      auto c = clean.run<double>(gz), d = dirty.run<double>(gz);
      EXPECT_EQ(c.z, d.z);
      EXPECT_EQ(c.gk, d.gk);
      EXPECT_EQ(c.gb, d.gb);
    }
}

// The same bits on any thread count (per-(b, h) sums, combined in a fixed order).
TEST(KernelizedRpe, SameBitsOnAnyThreadCount) {
  Problem pr(2, 3, 50, 6, 3, true, 51);
  pr.bias = make_bias(Bias::step, 3, 50, 40.0, 52);
  auto gz = testing_ref::random_vector<double>(2 * 3 * 50 * 3, 53);
  pr.threads = 1;
  auto a = pr.run<float>(gz);
  pr.threads = 3;
  auto b = pr.run<float>(gz);
  EXPECT_EQ(a.z, b.z);
  EXPECT_EQ(a.gk, b.gk);
  EXPECT_EQ(a.gb, b.gb);
}

// Causal: changing keys and values after i leaves outputs up to i unchanged.
TEST(KernelizedRpe, CausalDoesNotLeak) {
  const int64_t N = 50, m = 6, Dv = 3, i0 = 20;
  Problem pr(1, 1, N, m, Dv, true, 9);
  auto z0 = pr.run<double>({}).z;
  for (int64_t j = i0 + 1; j < N; ++j) {
    for (int64_t f = 0; f < m; ++f) pr.k[j * m + f] *= 50.0;
    for (int64_t d = 0; d < Dv; ++d) pr.v[j * Dv + d] += 100.0;
  }
  auto z1 = pr.run<double>({}).z;
  for (int64_t i = 0; i <= i0; ++i)
    for (int64_t d = 0; d < Dv; ++d) ASSERT_NEAR(z0[i * Dv + d], z1[i * Dv + d], 1e-9) << i;
}
