// Feature maps of kernelized attention, applied row by row: x [rows, D] -> phi [rows, m].
//
// Exposed on their own because Luo et al.'s kernelized attention with relative positions
// (issue 4) builds on the same maps and their backward.
//
//   elu   phi = elu(x) + 1                      m = D, no shift
//   relu  phi = max(x, 0)                       m = D, no shift
//   sikf  phi = exp(x - c)                      m = D, c = max_d x_d
//   favor phi = exp(u - c) / sqrt(m),           u_r = omega_r . x - |x|^2 / 2,  c = max_r u_r
//         (Performer's positive random features; omega [m, D])
//
// For the exponential maps (sikf, favor) the per-row shift c is returned: phi of a row is
// its true feature vector divided by e^c. A caller that needs several rows on a common scale
// (all keys of a head) multiplies row j by e^(c_j - R) for one reference R >= every c_j;
// attention outputs do not depend on R except through eps (see kernelized_attention.h).
// The shift is the row's own maximum, so the largest entry of phi is exactly 1 (1/sqrt(m)
// for favor) and exp never overflows.
#pragma once
#include "kernels/common/isa_namespace.h"
#include <cstdint>

namespace longattn::kernels {

enum class FeatureMap { elu, relu, sikf, favor };

// Lower-case name ("elu", ...) and the reverse lookup (false when the name is unknown).
const char* feature_map_name(FeatureMap f);
bool feature_map_from_name(const char* name, FeatureMap* out);

// True for the maps that carry a per-row shift (sikf, favor).
inline bool feature_map_is_exponential(FeatureMap f) {
  return f == FeatureMap::sikf || f == FeatureMap::favor;
}

template <class T>
struct FeatureMapSpec {
  FeatureMap kind = FeatureMap::elu;
  int64_t D = 0;             // input features
  int64_t m = 0;             // output features (= D except for favor)
  const T* omega = nullptr;  // favor: [m, D] row-major for this head
};

// phi[r * ldphi + f] for r < rows, f < m. For sikf/favor, shift[r] = c of the row and
// argmax[r] = the index of u (or x) that attains it (first one on ties); both may be
// nullptr, and are left untouched for elu/relu. ldphi >= m. No allocation.
LONGATTN_ISA_BEGIN
template <class T>
void feature_map_forward(const FeatureMapSpec<T>& s, const T* x, int64_t ldx, int64_t rows, T* phi,
                         int64_t ldphi, T* shift, int32_t* argmax);
LONGATTN_ISA_END

// Gradient with respect to x of a loss L(phi, c): g_phi = dL/dphi (phi's shift held fixed),
// g_shift[r] = dL/dc of row r, where c is the explicit shift (ignored for elu/relu, may be
// nullptr = zero). phi and argmax are what feature_map_forward returned for the same x.
// g_phi is overwritten (it becomes the gradient with respect to u, or x); gx [rows, D] is
// overwritten, never accumulated. Because c = max(u) is itself a function of x, its gradient
// flows into the element that attains the maximum.
LONGATTN_ISA_BEGIN
template <class T>
void feature_map_backward(const FeatureMapSpec<T>& s, const T* x, int64_t ldx, int64_t rows,
                          const T* phi, int64_t ldphi, const int32_t* argmax, T* g_phi,
                          int64_t ld_gphi, const T* g_shift, T* gx, int64_t ldgx);
LONGATTN_ISA_END

}  // namespace longattn::kernels
