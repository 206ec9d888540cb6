// The two implementations behind toeplitz_forward / toeplitz_backward (internal).
#pragma once
#include "kernels/common/parallel.h"
#include "kernels/common/isa_namespace.h"
#include "kernels/toeplitz/toeplitz.h"

namespace longattn::kernels {
LONGATTN_ISA_BEGIN
namespace toeplitz_detail {

template <class T>
void fft_forward(const ToeplitzParams<T>& p, BHND<T> y);
template <class T>
void fft_backward(const ToeplitzParams<T>& p, const ToeplitzGrads<T>& g);
template <class T>
void direct_forward(const ToeplitzParams<T>& p, BHND<T> y);
template <class T>
void direct_backward(const ToeplitzParams<T>& p, const ToeplitzGrads<T>& g);


}  // namespace toeplitz_detail
LONGATTN_ISA_END
}  // namespace longattn::kernels
