// The run-time dispatch through the public kernel functions (as the torch binding calls them):
// the best level is chosen by default, a forced level is honoured and reported, an unsupported or
// unknown one is refused with a message naming it, and every supported level computes the same
// attention as a plain fp64 softmax.
#include <gtest/gtest.h>

#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/common/cpu_features.h"
#include "kernels/dispatch/kernel_table.h"
#include "kernels/softmax_attention/softmax_attention.h"
#include "reference.h"

using namespace longattn::kernels;
using namespace testing_ref;

namespace {

// Restores the level chosen at start whatever a test forces.
struct IsaGuard {
  Isa saved = isa_active();
  ~IsaGuard() { set_isa(saved); }
};

TEST(Dispatch, BestLevelMatchesTheCpu) {
  const CpuFeatures f = cpu_features();
  const std::vector<Isa> compiled = isa_compiled();
  ASSERT_FALSE(compiled.empty());
  Isa expect = compiled.front();
  for (Isa l : compiled) {
    const bool runs = l == Isa::portable || (l == Isa::avx2 && f.x86_64_v3) ||
                      (l == Isa::avx512 && f.x86_64_v4) || (l == Isa::neon && f.neon);
    EXPECT_EQ(isa_supported(l), runs) << isa_name(l);
    if (runs) expect = l;
  }
  EXPECT_EQ(isa_best(), expect);
#if defined(__x86_64__)
  // A default build on x86-64 carries every level.
  EXPECT_EQ(compiled, (std::vector<Isa>{Isa::portable, Isa::avx2, Isa::avx512}));
#endif
}

// Where the CPU is known (the baseline-CPU test runs this binary under qemu-x86_64 -cpu qemu64,
// a model without AVX, and names the level it must get), the level chosen is that one and every
// level above it is refused: a default build then runs, correctly, on a CPU without AVX.
TEST(Dispatch, ExpectedLevelOnAKnownCpu) {
  const char* expect = std::getenv("LONGATTN_EXPECT_BEST");
  if (!expect || !*expect) GTEST_SKIP() << "LONGATTN_EXPECT_BEST not set (the CPU is not known)";
  Isa want;
  ASSERT_TRUE(isa_from_name(expect, &want)) << expect;
  EXPECT_EQ(isa_best(), want) << "chose " << isa_name(isa_best());
  EXPECT_EQ(isa_active(), want) << "active " << isa_name(isa_active());
  IsaGuard guard;
  bool above = false;  // isa_compiled() lists the levels lowest first
  for (Isa l : isa_compiled()) {
    const bool skip = !above;
    above = above || l == want;
    if (skip) continue;
    EXPECT_FALSE(isa_supported(l)) << isa_name(l);
    EXPECT_THROW(set_isa(l), std::invalid_argument) << isa_name(l);
  }
}

TEST(Dispatch, DefaultIsBestUnlessTheEnvironmentForcesOne) {
  const char* env = std::getenv("LONGATTN_ISA");
  Isa forced;
  if (env && *env && isa_from_name(env, &forced))
    EXPECT_EQ(isa_active(), forced);
  else
    EXPECT_EQ(isa_active(), isa_best());
}

TEST(Dispatch, ForcingIsHonouredAndReported) {
  IsaGuard guard;
  for (Isa l : isa_compiled()) {
    if (!isa_supported(l)) continue;
    set_isa(l);
    EXPECT_EQ(isa_active(), l);
    EXPECT_EQ(dispatch::active_table().level, l);
    EXPECT_EQ(build_isa().rfind(isa_name(l), 0), 0u) << build_isa();
  }
}

TEST(Dispatch, UnsupportedOrUnknownLevelsAreRefused) {
  IsaGuard guard;
  for (Isa l : {Isa::portable, Isa::neon, Isa::avx2, Isa::avx512}) {
    if (isa_supported(l)) continue;
    try {
      set_isa(l);
      FAIL() << "set_isa accepted " << isa_name(l);
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find(isa_name(l)), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("not supported"), std::string::npos) << e.what();
    }
  }
  Isa out;
  EXPECT_FALSE(isa_from_name("sse9", &out));
  EXPECT_TRUE(isa_from_name("avx2", &out));
  EXPECT_EQ(out, Isa::avx2);
}

// Softmax attention (causal, float) under every supported level against fp64.
TEST(Dispatch, EveryLevelComputesTheSameAttention) {
  IsaGuard guard;
  const int64_t B = 1, H = 2, N = 67, D = 16;
  const auto q = random_vector<float>(B * H * N * D, 1), k = random_vector<float>(B * H * N * D, 2),
             v = random_vector<float>(B * H * N * D, 3);
  std::vector<double> ref(B * H * N * D, 0.0);
  const double scale = 1.0 / std::sqrt(double(D));
  for (int64_t bh = 0; bh < B * H; ++bh)
    for (int64_t i = 0; i < N; ++i) {
      std::vector<double> w(i + 1);
      double mx = -INFINITY, z = 0;
      for (int64_t j = 0; j <= i; ++j) {
        double s = 0;
        for (int64_t d = 0; d < D; ++d) s += double(q[(bh * N + i) * D + d]) * k[(bh * N + j) * D + d];
        w[j] = s * scale;
        mx = std::max(mx, w[j]);
      }
      for (auto& x : w) z += (x = std::exp(x - mx));
      for (int64_t j = 0; j <= i; ++j)
        for (int64_t d = 0; d < D; ++d) ref[(bh * N + i) * D + d] += w[j] / z * v[(bh * N + j) * D + d];
    }
  int levels = 0;
  for (Isa l : isa_compiled()) {
    if (!isa_supported(l)) continue;
    set_isa(l);
    ++levels;
    SoftmaxAttentionParams<float> p;
    p.q = BHND<const float>::contiguous(q.data(), B, H, N, D);
    p.k = BHND<const float>::contiguous(k.data(), B, H, N, D);
    p.v = BHND<const float>::contiguous(v.data(), B, H, N, D);
    p.causal = true;
    p.scale = scale;
    std::vector<float> out(B * H * N * D), lse(B * H * N);
    softmax_attention_forward(p, BHND<float>::contiguous(out.data(), B, H, N, D), lse.data());
    EXPECT_LT(max_scaled_error(out, ref, 1e-5, 1e-4), 1.0) << isa_name(l);
  }
  EXPECT_GE(levels, 1);
}

}  // namespace
