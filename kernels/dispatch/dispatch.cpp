// The public kernel functions of longattn::kernels: each forwards to the table of the active
// instruction-set level (compiled once, for the target's baseline).
#include <stdexcept>
#include <string>

#include "kernels/dispatch/kernel_table.h"

namespace longattn::kernels {
namespace dispatch {

const KernelTable& table_of(Isa level) {
  switch (level) {
#if defined(LONGATTN_HAVE_ISA_portable)
    case Isa::portable: return kernel_table_portable();
#endif
#if defined(LONGATTN_HAVE_ISA_neon)
    case Isa::neon: return kernel_table_neon();
#endif
#if defined(LONGATTN_HAVE_ISA_avx2)
    case Isa::avx2: return kernel_table_avx2();
#endif
#if defined(LONGATTN_HAVE_ISA_avx512)
    case Isa::avx512: return kernel_table_avx512();
#endif
    default: break;
  }
  throw std::logic_error(std::string("no kernels compiled for level ") + isa_name(level));
}

const KernelTable& active_table() { return table_of(isa_active()); }

template <>
const TypedKernels<float>& active_kernels<float>() { return active_table().f32; }
template <>
const TypedKernels<double>& active_kernels<double>() { return active_table().f64; }

}  // namespace dispatch

using dispatch::active_kernels;

template <class T>
void softmax_attention_forward(const SoftmaxAttentionParams<T>& p, BHND<T> out, T* lse) {
  active_kernels<T>().softmax_attention_forward(p, out, lse);
}
template <class T>
void softmax_attention_backward(const SoftmaxAttentionParams<T>& p, const SoftmaxAttentionGrads<T>& g) {
  active_kernels<T>().softmax_attention_backward(p, g);
}
template <class T>
void kernelized_attention_forward(const KernelizedAttentionParams<T>& p, BHND<T> out, T* inv_denom) {
  active_kernels<T>().kernelized_attention_forward(p, out, inv_denom);
}
template <class T>
void kernelized_attention_backward(const KernelizedAttentionParams<T>& p,
                                   const KernelizedAttentionGrads<T>& g) {
  active_kernels<T>().kernelized_attention_backward(p, g);
}
template <class T>
void feature_map_forward(const FeatureMapSpec<T>& s, const T* x, int64_t ldx, int64_t rows, T* phi,
                         int64_t ldphi, T* shift, int32_t* argmax) {
  active_kernels<T>().feature_map_forward(s, x, ldx, rows, phi, ldphi, shift, argmax);
}
template <class T>
void feature_map_backward(const FeatureMapSpec<T>& s, const T* x, int64_t ldx, int64_t rows,
                          const T* phi, int64_t ldphi, const int32_t* argmax, T* g_phi,
                          int64_t ld_gphi, const T* g_shift, T* gx, int64_t ldgx) {
  active_kernels<T>().feature_map_backward(s, x, ldx, rows, phi, ldphi, argmax, g_phi, ld_gphi,
                                           g_shift, gx, ldgx);
}
template <class T>
void kernelized_rpe_forward(const KernelizedRpeParams<T>& p, BHND<T> out, KernelizedRpeRows<T> rows) {
  active_kernels<T>().kernelized_rpe_forward(p, out, rows);
}
template <class T>
void kernelized_rpe_backward(const KernelizedRpeParams<T>& p, const KernelizedRpeGrads<T>& g) {
  active_kernels<T>().kernelized_rpe_backward(p, g);
}
template <class T>
void shatter_forward(const ShatterParams<T>& p, BHND<T> out, T* lse) {
  active_kernels<T>().shatter_forward(p, out, lse);
}
template <class T>
void shatter_backward(const ShatterParams<T>& p, const ShatterGrads<T>& g) {
  active_kernels<T>().shatter_backward(p, g);
}
template <class T>
void toeplitz_forward(const ToeplitzParams<T>& p, BHND<T> y) {
  active_kernels<T>().toeplitz_forward(p, y);
}
template <class T>
void toeplitz_backward(const ToeplitzParams<T>& p, const ToeplitzGrads<T>& g) {
  active_kernels<T>().toeplitz_backward(p, g);
}
template <class T>
void toeplitz2d_forward(const Toeplitz2dParams<T>& p, BHND<T> y) {
  active_kernels<T>().toeplitz2d_forward(p, y);
}
template <class T>
void toeplitz2d_backward(const Toeplitz2dParams<T>& p, const Toeplitz2dGrads<T>& g) {
  active_kernels<T>().toeplitz2d_backward(p, g);
}
template <class T>
void yoso_hash(const YosoParams<T>& p, int32_t* q_codes, int32_t* k_codes) {
  active_kernels<T>().yoso_hash(p, q_codes, k_codes);
}
template <class T>
void yoso_forward(const YosoParams<T>& p, const int32_t* q_codes, const int32_t* k_codes,
                  BHND<T> out) {
  active_kernels<T>().yoso_forward(p, q_codes, k_codes, out);
}
template <class T>
void yoso_backward_lsh(const YosoParams<T>& p, const int32_t* q_codes, const int32_t* k_codes,
                       const YosoGrads<T>& g) {
  active_kernels<T>().yoso_backward_lsh(p, q_codes, k_codes, g);
}
template <class T>
void yoso_backward_exact(const YosoParams<T>& p, const YosoGrads<T>& g) {
  active_kernels<T>().yoso_backward_exact(p, g);
}
template <class T>
void yoso_expectation_forward(const YosoParams<T>& p, BHND<T> out) {
  active_kernels<T>().yoso_expectation_forward(p, out);
}
template <class T>
void yoso_expectation_backward(const YosoParams<T>& p, const YosoGrads<T>& g,
                               YosoDerivative derivative) {
  active_kernels<T>().yoso_expectation_backward(p, g, derivative);
}
template <class T>
void dropout_apply(const DropoutParams& p, const T* x, T* out, int64_t n) {
  active_kernels<T>().dropout_apply(p, x, out, n);
}

uint32_t dropout_threshold(double p) { return dispatch::active_table().dropout_threshold(p); }
double dropout_scale(double p) { return dispatch::active_table().dropout_scale(p); }
void dropout_mask(const DropoutParams& p, uint8_t* keep, int64_t n) {
  dispatch::active_table().dropout_mask(p, keep, n);
}
ToeplitzPath toeplitz_choose_path(int64_t N, int64_t C, bool causal) {
  return dispatch::active_table().toeplitz_choose_path(N, C, causal);
}

// Every template above for float and double: explicitly instantiating this table of their
// addresses emits each of them, as the kernel sources' explicit instantiations do per level.
namespace dispatch {
template <class T>
const TypedKernels<T> public_kernels = {
#define LONGATTN_TABLE_ENTRY(name) &name<T>,
    LONGATTN_KERNEL_TEMPLATES(LONGATTN_TABLE_ENTRY)
#undef LONGATTN_TABLE_ENTRY
};
template const TypedKernels<float> public_kernels<float>;
template const TypedKernels<double> public_kernels<double>;
}  // namespace dispatch

}  // namespace longattn::kernels
