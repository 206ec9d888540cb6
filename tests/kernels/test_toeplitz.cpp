#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "kernels/toeplitz/toeplitz.h"
#include "reference.h"

using namespace longattn::kernels;

namespace {

// Dense fp64 references, written for clarity. x, y: [B, H, N, C]; c: [H, 2N - 1].
struct Dense1d {
  int64_t B, H, N, C;
  bool causal;
  bool on(int64_t i, int64_t j) const { return !causal || j <= i; }
  std::vector<double> forward(const std::vector<double>& c, const std::vector<double>& x) const {
    std::vector<double> y(B * H * N * C, 0.0);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t i = 0; i < N; ++i)
          for (int64_t j = 0; j < N; ++j)
            if (on(i, j))
              for (int64_t k = 0; k < C; ++k)
                y[((b * H + h) * N + i) * C + k] += c[h * (2 * N - 1) + j - i + N - 1] * x[((b * H + h) * N + j) * C + k];
    return y;
  }
  // grad_x_j = sum_i c[j - i] g_i ; grad_c[j - i] = sum_{b,k} g_i x_j.
  void backward(const std::vector<double>& c, const std::vector<double>& x,
                const std::vector<double>& g, std::vector<double>& gx, std::vector<double>& gc) const {
    gx.assign(B * H * N * C, 0.0);
    gc.assign(H * (2 * N - 1), 0.0);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t i = 0; i < N; ++i)
          for (int64_t j = 0; j < N; ++j)
            if (on(i, j))
              for (int64_t k = 0; k < C; ++k) {
                const int64_t r = h * (2 * N - 1) + j - i + N - 1;
                gx[((b * H + h) * N + j) * C + k] += c[r] * g[((b * H + h) * N + i) * C + k];
                gc[r] += g[((b * H + h) * N + i) * C + k] * x[((b * H + h) * N + j) * C + k];
              }
  }
};

double max_abs(const std::vector<double>& v) {
  double m = 0;
  for (double a : v) m = std::max(m, std::abs(a));
  return m;
}

template <class T>
std::vector<T> cast(const std::vector<double>& v) {
  return std::vector<T>(v.begin(), v.end());
}

// Runs forward and backward through the kernel in precision T on the given path and compares
// with the dense fp64 reference. Tolerance relative to the largest reference value: an FFT's
// rounding error is ~eps * log2(L) times the signal scale (2e-12 / 2e-4 cover L up to 16384
// with a ~10x margin); the direct path (GEMM) has ~eps * sqrt(N).
template <class T>
void check_1d(int64_t B, int64_t H, int64_t N, int64_t C, bool causal, ToeplitzPath path,
              double tol) {
  Dense1d ref{B, H, N, C, causal};
  auto c = testing_ref::random_vector<double>(H * (2 * N - 1), 11 + N);
  auto x = testing_ref::random_vector<double>(B * H * N * C, 12 + N);
  auto g = testing_ref::random_vector<double>(B * H * N * C, 13 + N);
  auto cT = cast<T>(c), xT = cast<T>(x), gT = cast<T>(g);
  ToeplitzParams<T> p;
  p.x = BHND<const T>::contiguous(xT.data(), B, H, N, C);
  p.coeffs = cT.data();
  p.coeffs_stride_h = 2 * N - 1;
  p.causal = causal;
  p.path = path;
  p.threads = 2;
  std::vector<T> y(B * H * N * C, T(-7)), gx(B * H * N * C, T(-7)), gc(H * (2 * N - 1), T(-7));
  toeplitz_forward(p, BHND<T>::contiguous(y.data(), B, H, N, C));
  toeplitz_backward(p, ToeplitzGrads<T>{BHND<const T>::contiguous(gT.data(), B, H, N, C),
                                        BHND<T>::contiguous(gx.data(), B, H, N, C), gc.data()});
  auto ry = ref.forward(c, x);
  std::vector<double> rgx, rgc;
  ref.backward(c, x, g, rgx, rgc);
  const char* what = path == ToeplitzPath::Fft ? "fft" : "direct";
  EXPECT_LE(testing_ref::max_scaled_error(y, ry, tol * max_abs(ry), 0), 1.0)
      << what << " forward N=" << N << " causal=" << causal;
  EXPECT_LE(testing_ref::max_scaled_error(gx, rgx, tol * max_abs(rgx), 0), 1.0)
      << what << " grad_x N=" << N << " causal=" << causal;
  EXPECT_LE(testing_ref::max_scaled_error(gc, rgc, tol * max_abs(rgc) + 1e-300, 0), 1.0)
      << what << " grad_c N=" << N << " causal=" << causal;
  if (causal) {  // offsets r > 0 (future keys) must get exactly zero gradient
    for (int64_t h = 0; h < H; ++h)
      for (int64_t r = 1; r < N; ++r) ASSERT_EQ(gc[h * (2 * N - 1) + N - 1 + r], T(0));
  }
}

}  // namespace

TEST(Toeplitz, MatchesDenseDouble) {
  for (int64_t N : {1, 2, 97, 1024, 4099})
    for (bool causal : {false, true})
      for (auto path : {ToeplitzPath::Fft, ToeplitzPath::Direct}) {
        const int64_t C = N >= 1024 ? 3 : 19;  // 19: a chunk and a partial one (16 lanes)
        check_1d<double>(N >= 1024 ? 1 : 2, N >= 4096 ? 1 : 2, N, C, causal, path, 1e-11);
      }
}

TEST(Toeplitz, MatchesDenseFloat) {
  for (int64_t N : {1, 97, 1024})
    for (bool causal : {false, true})
      for (auto path : {ToeplitzPath::Fft, ToeplitzPath::Direct})
        check_1d<float>(2, 2, N, N >= 1024 ? 5 : 40, causal, path, 2e-4);
}

// The coefficient and input gradients against central finite differences of the kernel's own
// forward in double (the product is linear in each, so the differences are exact up to
// rounding: 1e-7 relative).
TEST(Toeplitz, GradientsMatchFiniteDifferences) {
  const int64_t B = 2, H = 2, N = 9, C = 3;
  for (bool causal : {false, true})
    for (auto path : {ToeplitzPath::Fft, ToeplitzPath::Direct}) {
      auto c = testing_ref::random_vector<double>(H * (2 * N - 1), 1);
      auto x = testing_ref::random_vector<double>(B * H * N * C, 2);
      auto g = testing_ref::random_vector<double>(B * H * N * C, 3);
      ToeplitzParams<double> p;
      p.coeffs_stride_h = 2 * N - 1;
      p.causal = causal;
      p.path = path;
      p.threads = 1;
      auto loss = [&](const std::vector<double>& cc, const std::vector<double>& xx) {
        p.x = BHND<const double>::contiguous(xx.data(), B, H, N, C);
        p.coeffs = cc.data();
        std::vector<double> y(B * H * N * C);
        toeplitz_forward(p, BHND<double>::contiguous(y.data(), B, H, N, C));
        double s = 0;
        for (size_t i = 0; i < y.size(); ++i) s += y[i] * g[i];
        return s;
      };
      std::vector<double> gx(x.size()), gc(c.size());
      p.x = BHND<const double>::contiguous(x.data(), B, H, N, C);
      p.coeffs = c.data();
      toeplitz_backward(p, ToeplitzGrads<double>{BHND<const double>::contiguous(g.data(), B, H, N, C),
                                                 BHND<double>::contiguous(gx.data(), B, H, N, C), gc.data()});
      const double eps = 1e-3;
      for (size_t i = 0; i < c.size(); ++i) {
        auto cp = c, cm = c;
        cp[i] += eps, cm[i] -= eps;
        EXPECT_NEAR(gc[i], (loss(cp, x) - loss(cm, x)) / (2 * eps), 1e-7) << "coeff " << i;
      }
      for (size_t i = 0; i < x.size(); i += 5) {
        auto xp = x, xm = x;
        xp[i] += eps, xm[i] -= eps;
        EXPECT_NEAR(gx[i], (loss(c, xp) - loss(c, xm)) / (2 * eps), 1e-7) << "x " << i;
      }
    }
}

// Perturbing a future key (j > i) must leave every output up to i unchanged. A leak of a
// coefficient ~1 times the 1e3 perturbation would be ~1e3; rounding is ~1e-12.
TEST(Toeplitz, CausalDoesNotLeak) {
  const int64_t N = 300, C = 4;
  for (auto path : {ToeplitzPath::Fft, ToeplitzPath::Direct}) {
    auto c = testing_ref::random_vector<double>(2 * N - 1, 5);
    auto x = testing_ref::random_vector<double>(N * C, 6);
    ToeplitzParams<double> p;
    p.coeffs = c.data();
    p.causal = true;
    p.path = path;
    std::vector<double> y0(N * C), y1(N * C);
    p.x = BHND<const double>::contiguous(x.data(), 1, 1, N, C);
    toeplitz_forward(p, BHND<double>::contiguous(y0.data(), 1, 1, N, C));
    const int64_t i0 = 137;
    for (int64_t j = i0 + 1; j < N; ++j)
      for (int64_t k = 0; k < C; ++k) x[j * C + k] += 1e3;
    toeplitz_forward(p, BHND<double>::contiguous(y1.data(), 1, 1, N, C));
    for (int64_t i = 0; i <= i0; ++i)
      for (int64_t k = 0; k < C; ++k) ASSERT_NEAR(y0[i * C + k], y1[i * C + k], 1e-8) << i;
    EXPECT_GT(std::abs(y0[(i0 + 1) * C] - y1[(i0 + 1) * C]), 1.0);  // the perturbation is seen
  }
}

// Strided input (a [B, N, H, C] buffer viewed as [B, H, N, C]) and FFT == direct in float.
TEST(Toeplitz, StridedInputAndPathsAgree) {
  const int64_t B = 2, H = 3, N = 200, C = 33;
  auto c = testing_ref::random_vector<float>(H * (2 * N - 1), 8);
  auto x = testing_ref::random_vector<float>(B * N * H * C, 9);
  ToeplitzParams<float> p;
  p.x = BHND<const float>{x.data(), B, H, N, C, N * H * C, C, H * C};
  p.coeffs = c.data();
  p.coeffs_stride_h = 2 * N - 1;
  std::vector<float> yf(B * H * N * C), yd(B * H * N * C);
  p.path = ToeplitzPath::Fft;
  toeplitz_forward(p, BHND<float>::contiguous(yf.data(), B, H, N, C));
  p.path = ToeplitzPath::Direct;
  toeplitz_forward(p, BHND<float>::contiguous(yd.data(), B, H, N, C));
  double scale = 0;
  for (float v : yd) scale = std::max(scale, double(std::abs(v)));
  EXPECT_LE(testing_ref::max_scaled_error(yf, yd, 1e-5 * scale, 0), 1.0);
}

TEST(Toeplitz, PathChoice) {
  EXPECT_EQ(toeplitz_choose_path(4, 64, false), ToeplitzPath::Direct);
  EXPECT_EQ(toeplitz_choose_path(128, 64, false), ToeplitzPath::Fft);
  EXPECT_EQ(toeplitz_choose_path(65536, 64, false), ToeplitzPath::Fft);
}

// 2-D: against the dense bias matrix B[(a,b),(a',b')] = row[a' - a + hh - 1] + col[b' - b + ww - 1],
// forward and all three gradients, both paths, in double (tolerance as for 1-D).
TEST(Toeplitz2d, MatchesDenseBiasMatrix) {
  const int64_t Bt = 2, H = 2, C = 5;
  for (auto [hh, ww] : {std::pair<int64_t, int64_t>{5, 7}, {1, 9}, {16, 16}, {3, 1}})
    for (auto path : {ToeplitzPath::Fft, ToeplitzPath::Direct}) {
      const int64_t N = hh * ww;
      auto row = testing_ref::random_vector<double>(H * (2 * hh - 1), 21);
      auto col = testing_ref::random_vector<double>(H * (2 * ww - 1), 22);
      auto x = testing_ref::random_vector<double>(Bt * H * N * C, 23);
      auto g = testing_ref::random_vector<double>(Bt * H * N * C, 24);
      std::vector<double> ry(x.size(), 0), rgx(x.size(), 0), rgr(row.size(), 0), rgc(col.size(), 0);
      for (int64_t b = 0; b < Bt; ++b)
        for (int64_t h = 0; h < H; ++h)
          for (int64_t i = 0; i < N; ++i)
            for (int64_t j = 0; j < N; ++j) {
              const int64_t a = i / ww, bb = i % ww, a2 = j / ww, b2 = j % ww;
              const int64_t ri = h * (2 * hh - 1) + a2 - a + hh - 1, ci = h * (2 * ww - 1) + b2 - bb + ww - 1;
              const double bias = row[ri] + col[ci];
              for (int64_t k = 0; k < C; ++k) {
                const int64_t xi = ((b * H + h) * N + i) * C + k, xj = ((b * H + h) * N + j) * C + k;
                ry[xi] += bias * x[xj];
                rgx[xj] += bias * g[xi];
                rgr[ri] += g[xi] * x[xj];
                rgc[ci] += g[xi] * x[xj];
              }
            }
      Toeplitz2dParams<double> p;
      p.x = BHND<const double>::contiguous(x.data(), Bt, H, N, C);
      p.row_coeffs = row.data(), p.col_coeffs = col.data();
      p.row_stride_h = 2 * hh - 1, p.col_stride_h = 2 * ww - 1;
      p.height = hh, p.width = ww, p.path = path, p.threads = 2;
      std::vector<double> y(x.size()), gx(x.size()), gr(row.size()), gc(col.size());
      toeplitz2d_forward(p, BHND<double>::contiguous(y.data(), Bt, H, N, C));
      toeplitz2d_backward(p, Toeplitz2dGrads<double>{BHND<const double>::contiguous(g.data(), Bt, H, N, C),
                                                     BHND<double>::contiguous(gx.data(), Bt, H, N, C),
                                                     gr.data(), gc.data()});
      EXPECT_LE(testing_ref::max_scaled_error(y, ry, 1e-11 * max_abs(ry), 0), 1.0) << hh << "x" << ww;
      EXPECT_LE(testing_ref::max_scaled_error(gx, rgx, 1e-11 * max_abs(rgx), 0), 1.0) << hh << "x" << ww;
      EXPECT_LE(testing_ref::max_scaled_error(gr, rgr, 1e-11 * max_abs(rgr), 0), 1.0) << hh << "x" << ww;
      EXPECT_LE(testing_ref::max_scaled_error(gc, rgc, 1e-11 * max_abs(rgc), 0), 1.0) << hh << "x" << ww;
    }
}

// Empty inputs: nothing to write, zero coefficient gradient.
TEST(Toeplitz, EmptyBatchGivesZeroCoefficientGradient) {
  const int64_t N = 5;
  std::vector<double> c(2 * N - 1, 1.0), gc(2 * N - 1, 3.0);
  ToeplitzParams<double> p;
  p.x = BHND<const double>::contiguous(nullptr, 0, 1, N, 4);
  p.coeffs = c.data();
  toeplitz_backward(p, ToeplitzGrads<double>{BHND<const double>::contiguous(nullptr, 0, 1, N, 4), BHND<double>{}, gc.data()});
  for (double v : gc) EXPECT_EQ(v, 0.0);
}
