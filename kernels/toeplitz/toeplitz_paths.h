// The two implementations behind toeplitz_forward / toeplitz_backward (internal).
#pragma once
#include "kernels/toeplitz/toeplitz.h"

namespace longattn::kernels::toeplitz_detail {

template <class T>
void fft_forward(const ToeplitzParams<T>& p, BHND<T> y);
template <class T>
void fft_backward(const ToeplitzParams<T>& p, const ToeplitzGrads<T>& g);
template <class T>
void direct_forward(const ToeplitzParams<T>& p, BHND<T> y);
template <class T>
void direct_backward(const ToeplitzParams<T>& p, const ToeplitzGrads<T>& g);

inline int resolve_threads(int threads);

}  // namespace longattn::kernels::toeplitz_detail

#include <omp.h>
inline int longattn::kernels::toeplitz_detail::resolve_threads(int threads) {
  return threads > 0 ? threads : omp_get_max_threads();
}
