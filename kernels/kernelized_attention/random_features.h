// Performer's random projections omega for the favor feature map (Choromanski et al. 2021).
//
// Orthogonal: Gaussian d x d blocks orthogonalised by QR (modified Gram-Schmidt, done twice,
// in double; R's diagonal made positive, which makes Q Haar-distributed), stacked until m
// rows (the last block truncated), then each row rescaled:
//   chi     by the norm of an independent Gaussian d-vector (a chi(d) draw), so every row is
//           marginally N(0, I_d) and the exp kernel estimate stays unbiased;
//   sqrt_d  by sqrt(d) (every row has norm sqrt(d); biased, lower variance).
// Not orthogonal: i.i.d. N(0, I_d) rows (chi), or those rows rescaled to norm sqrt(d).
//
// Reproducible: the stream of head h comes from (seed, h) through splitmix64 and our own
// Box-Muller, so the result is the same bit for bit on every platform and thread count.
#pragma once
#include <cstdint>

namespace longattn::kernels {

enum class RandomFeatureScaling { chi, sqrt_d };

// Writes heads * m * d values (heads >= 1, row-major [heads, m, d]); head h uses its own
// independent blocks. A shared [m, d] projection is heads = 1.
template <class T>
void random_features(int64_t m, int64_t d, uint64_t seed, bool orthogonal,
                     RandomFeatureScaling scaling, int64_t heads, T* out);

}  // namespace longattn::kernels
