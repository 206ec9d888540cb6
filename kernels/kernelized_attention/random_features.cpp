#include "kernels/kernelized_attention/random_features.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/common/random.h"

namespace longattn::kernels {
namespace {

// Columns of the d x d matrix g (row-major) made orthonormal in place (Q of g = QR with a
// positive diagonal of R). Two passes of modified Gram-Schmidt keep Q orthogonal to
// rounding even when g is ill-conditioned.
void orthonormalise_columns(std::vector<double>& g, int64_t d) {
  for (int64_t c = 0; c < d; ++c) {
    for (int pass = 0; pass < 2; ++pass)
      for (int64_t p = 0; p < c; ++p) {
        double dot = 0;
        for (int64_t r = 0; r < d; ++r) dot += g[r * d + p] * g[r * d + c];
        for (int64_t r = 0; r < d; ++r) g[r * d + c] -= dot * g[r * d + p];
      }
    double norm = 0;
    for (int64_t r = 0; r < d; ++r) norm += g[r * d + c] * g[r * d + c];
    norm = std::sqrt(norm);
    for (int64_t r = 0; r < d; ++r) g[r * d + c] /= norm;
  }
}

}  // namespace

template <class T>
void random_features(int64_t m, int64_t d, uint64_t seed, bool orthogonal,
                     RandomFeatureScaling scaling, int64_t heads, T* out) {
  std::vector<double> block(d * d), rows(m * d);
  for (int64_t h = 0; h < heads; ++h) {
    SplitMix64 mix{seed};
    for (int64_t i = 0; i <= h; ++i) mix.next();  // decorrelate (seed, h) from (seed, h')
    NormalStream gauss{SplitMix64{mix.next() ^ (0xd1b54a32d192ed03ULL * uint64_t(h + 1))}};
    if (orthogonal) {
      for (int64_t r0 = 0; r0 < m; r0 += d) {
        for (auto& x : block) x = gauss.next();
        orthonormalise_columns(block, d);
        // Rows of the output block are the columns of Q (Q^T's rows, as Performer).
        for (int64_t r = r0; r < std::min(m, r0 + d); ++r)
          for (int64_t c = 0; c < d; ++c) rows[r * d + c] = block[c * d + (r - r0)];
      }
    } else {
      for (auto& x : rows) x = gauss.next();
    }
    for (int64_t r = 0; r < m; ++r) {
      double target = std::sqrt(double(d));  // sqrt_d
      if (scaling == RandomFeatureScaling::chi) {
        if (!orthogonal) target = -1;  // i.i.d. Gaussian rows keep their own chi norms
        else {
          double sq = 0;
          for (int64_t c = 0; c < d; ++c) {
            const double z = gauss.next();
            sq += z * z;
          }
          target = std::sqrt(sq);
        }
      }
      double norm = 0;
      for (int64_t c = 0; c < d; ++c) norm += rows[r * d + c] * rows[r * d + c];
      const double f = target < 0 ? 1.0 : target / std::sqrt(norm);
      for (int64_t c = 0; c < d; ++c) out[(h * m + r) * d + c] = static_cast<T>(rows[r * d + c] * f);
    }
  }
}

template void random_features<float>(int64_t, int64_t, uint64_t, bool, RandomFeatureScaling,
                                     int64_t, float*);
template void random_features<double>(int64_t, int64_t, uint64_t, bool, RandomFeatureScaling,
                                      int64_t, double*);

}  // namespace longattn::kernels
