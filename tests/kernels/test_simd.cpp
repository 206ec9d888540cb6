// kernels/common/simd.h: the fast exp2 and the softmax row / column helpers.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "kernels/common/simd.h"
#include "kernels/common/vec_exp.h"
#include "reference.h"

using namespace longattn::kernels;

namespace {

// The polynomial's relative error is below 2e-7 (about 2 ulp); 4e-7 allows for the rounding
// of the argument split x = n + f.
constexpr double kExp2RelTol = 4e-7;

TEST(Simd, Exp2MatchesLibmAndUnderflowsToExactZero) {
  for (double x = -125.0; x <= 127.0; x += 0.0137) {
    const float got = simd::exp2(float(x));
    const double want = std::exp2(double(float(x)));
    ASSERT_NEAR(got, want, kExp2RelTol * want) << "x = " << x;
  }
  EXPECT_EQ(simd::exp2(-INFINITY), 0.0f);
  EXPECT_EQ(simd::exp2(-200.0f), 0.0f);
  EXPECT_EQ(simd::exp2(0.0f), 1.0f);
}

// vexp of NaN is NaN. Found by the kernel fuzzer (docs/fuzzing.md): a NaN feature of sikf/favor
// reached vexp, which converted NaN to an integer and shifted the negative result left, undefined
// behaviour that the sanitizer build's UBSan stops on (elsewhere the result was NaN by luck).
TEST(VecExp, NanGivesNanAndInfinitiesTheirLimits) {
  // volatile: evaluated at run time, where UBSan sees it (not folded by the compiler).
  volatile float nf = std::numeric_limits<float>::quiet_NaN();
  volatile double nd = std::numeric_limits<double>::quiet_NaN();
  EXPECT_TRUE(std::isnan(vexp(nf)));
  EXPECT_TRUE(std::isnan(vexp(nd)));
  EXPECT_EQ(vexp(-INFINITY), 0.0f);
  EXPECT_EQ(vexp(-double(INFINITY)), 0.0);
  EXPECT_TRUE(std::isfinite(vexp(INFINITY)) && vexp(INFINITY) > 1e38f);  // capped at the largest result
  EXPECT_TRUE(std::isfinite(vexp(double(INFINITY))) && vexp(double(INFINITY)) > 1e307);
  EXPECT_NEAR(vexp(1.0f), std::exp(1.0), 4e-7 * std::exp(1.0));
  EXPECT_NEAR(vexp(1.0), std::exp(1.0), 4e-16 * std::exp(1.0));
}

TEST(Simd, RowOperationsMatchScalarLoops) {
  for (int64_t n : {0, 1, 7, 16, 33, 100}) {
    auto x = testing_ref::normal_vector<float>(n, 10 + n, 5.0);
    if (n > 3) x[2] = -INFINITY;  // a masked entry
    float mx = -INFINITY;
    for (float e : x) mx = std::max(mx, e);
    EXPECT_EQ(simd::row_max(x.data(), n), mx) << n;
    const float shift = n ? mx : 0.0f;
    std::vector<float> y = x;
    const float sum = simd::exp2_shift_sum(y.data(), n, shift);
    double want_sum = 0;
    for (int64_t i = 0; i < n; ++i) {
      const double want = std::exp2(double(x[i] - shift));  // argument rounded as in float
      want_sum += want;
      ASSERT_NEAR(y[i], want, kExp2RelTol * want + 1e-30) << n << " " << i;
    }
    if (n > 3) {
      EXPECT_EQ(y[2], 0.0f);
    }
    EXPECT_NEAR(sum, want_sum, 1e-6 * want_sum) << n;
  }
}

TEST(Simd, ColumnOperationsMatchScalarLoops) {
  const int64_t rows = 13, cols = 37, ld = 40;  // ragged vector tails, padded rows
  auto S = testing_ref::normal_vector<float>(rows * ld, 3, 4.0);
  S[5 * ld + 3] = -INFINITY;
  std::vector<float> colmax(cols, -INFINITY);
  colmax[0] = 100.0f;  // the running max wins where it is larger
  simd::column_max(S.data(), ld, rows, cols, colmax.data());
  for (int64_t c = 0; c < cols; ++c) {
    float want = c == 0 ? 100.0f : -INFINITY;
    for (int64_t r = 0; r < rows; ++r) want = std::max(want, S[r * ld + c]);
    EXPECT_EQ(colmax[c], want) << c;
  }
  std::vector<float> E = S, sum(cols, 1.0f);
  simd::exp2_columns(E.data(), ld, rows, cols, colmax.data(), sum.data());
  for (int64_t c = 0; c < cols; ++c) {
    double want_sum = 1.0;
    for (int64_t r = 0; r < rows; ++r) {
      const double want = std::exp2(double(S[r * ld + c] - colmax[c]));
      want_sum += want;
      ASSERT_NEAR(E[r * ld + c], want, kExp2RelTol * want + 1e-30) << r << " " << c;
    }
    EXPECT_NEAR(sum[c], want_sum, 1e-6 * want_sum) << c;
  }
  EXPECT_EQ(E[5 * ld + 3], 0.0f);
  for (int64_t r = 0; r < rows; ++r)  // the padding between rows is left alone
    for (int64_t c = cols; c < ld; ++c) EXPECT_EQ(E[r * ld + c], S[r * ld + c]);
}

}  // namespace
