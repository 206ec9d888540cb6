// PLACEHOLDER: a naive O(N) memory-per-row kernel so the binding builds and is tested until the
// fused kernel (branch softmax) lands; kernels/CMakeLists.txt drops this file as soon as another
// .cpp exists in this folder. Delete it when merging the fused kernel.
#include <cmath>
#include <vector>
#include "kernels/softmax_attention/softmax_attention.h"
namespace longattn::kernels {
template <class T>
void softmax_attention_forward(const SoftmaxAttentionParams<T>& p, BHND<T> out, T* lse) {
  auto& q = p.q; auto& k = p.k; auto& v = p.v;
  int64_t N = q.N;
  for (int64_t b = 0; b < q.B; ++b) for (int64_t h = 0; h < q.H; ++h) for (int64_t i = 0; i < q.N; ++i) {
    std::vector<double> s(k.N, -INFINITY); double m = -INFINITY;
    for (int64_t j = 0; j < k.N; ++j) {
      if (p.key_padding_mask && !p.key_padding_mask[b * p.mask_stride_b + j]) continue;
      if (p.causal && j > i) continue;
      double d = 0; for (int64_t t = 0; t < q.D; ++t) d += double(q.row(b,h,i)[t]) * k.row(b,h,j)[t];
      d *= p.scale; if (p.rel_bias) d += p.rel_bias[h * p.rel_bias_stride_h + j - i + N - 1];
      s[j] = d; m = std::max(m, d);
    }
    T* o = out.row(b,h,i);
    for (int64_t t = 0; t < v.D; ++t) o[t] = 0;
    if (m == -INFINITY) { lse[(b*q.H+h)*q.N+i] = -INFINITY; continue; }
    double z = 0; for (int64_t j = 0; j < k.N; ++j) z += std::exp(s[j]-m);
    std::vector<double> acc(v.D, 0);
    for (int64_t j = 0; j < k.N; ++j) { double w = std::exp(s[j]-m)/z; if (w) for (int64_t t = 0; t < v.D; ++t) acc[t] += w * v.row(b,h,j)[t]; }
    for (int64_t t = 0; t < v.D; ++t) o[t] = acc[t];
    lse[(b*q.H+h)*q.N+i] = m + std::log(z);
  }
}
template <class T>
void softmax_attention_backward(const SoftmaxAttentionParams<T>& p, const SoftmaxAttentionGrads<T>& g) {
  auto& q = p.q; auto& k = p.k; auto& v = p.v; int64_t N = q.N;
  for (int64_t b = 0; b < q.B; ++b) for (int64_t h = 0; h < q.H; ++h) {
    for (int64_t j = 0; j < k.N; ++j) { for (int64_t t=0;t<k.D;++t) g.grad_k.row(b,h,j)[t]=0; for (int64_t t=0;t<v.D;++t) g.grad_v.row(b,h,j)[t]=0; }
  }
  if (g.grad_rel_bias) for (int64_t h = 0; h < q.H; ++h) for (int64_t r = 0; r < 2*N-1; ++r) g.grad_rel_bias[h*(2*N-1)+r] = 0;
  for (int64_t b = 0; b < q.B; ++b) for (int64_t h = 0; h < q.H; ++h) for (int64_t i = 0; i < q.N; ++i) {
    T* gq = g.grad_q.row(b,h,i); for (int64_t t=0;t<q.D;++t) gq[t]=0;
    double l = g.lse[(b*q.H+h)*q.N+i]; if (l == -INFINITY) continue;
    double Di = 0; for (int64_t t=0;t<v.D;++t) Di += double(g.grad_out.row(b,h,i)[t]) * g.out.row(b,h,i)[t];
    for (int64_t j = 0; j < k.N; ++j) {
      if (p.key_padding_mask && !p.key_padding_mask[b * p.mask_stride_b + j]) continue;
      if (p.causal && j > i) continue;
      double d = 0; for (int64_t t = 0; t < q.D; ++t) d += double(q.row(b,h,i)[t]) * k.row(b,h,j)[t];
      d *= p.scale; if (p.rel_bias) d += p.rel_bias[h * p.rel_bias_stride_h + j - i + N - 1];
      double P = std::exp(d - l);
      double dP = 0; for (int64_t t=0;t<v.D;++t) { dP += double(g.grad_out.row(b,h,i)[t]) * v.row(b,h,j)[t]; g.grad_v.row(b,h,j)[t] += P * g.grad_out.row(b,h,i)[t]; }
      double dS = P * (dP - Di);
      for (int64_t t=0;t<q.D;++t) { gq[t] += dS * p.scale * k.row(b,h,j)[t]; g.grad_k.row(b,h,j)[t] += dS * p.scale * q.row(b,h,i)[t]; }
      if (g.grad_rel_bias) g.grad_rel_bias[h*(2*N-1) + j - i + N - 1] += dS;
    }
  }
}
template void softmax_attention_forward<float>(const SoftmaxAttentionParams<float>&, BHND<float>, float*);
template void softmax_attention_forward<double>(const SoftmaxAttentionParams<double>&, BHND<double>, double*);
template void softmax_attention_backward<float>(const SoftmaxAttentionParams<float>&, const SoftmaxAttentionGrads<float>&);
template void softmax_attention_backward<double>(const SoftmaxAttentionParams<double>&, const SoftmaxAttentionGrads<double>&);
}
