// torch binding of Luo et al.'s kernelized attention with RPE at the feature level:
// phi(q), phi(k) already mapped; the relative bias b enters as Toeplitz weights exp(b - max b).
#include <ATen/Parallel.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include "kernels/kernelized_rpe/kernelized_rpe.h"
#include "longattn/kernelized_rpe.h"
#include "ops/kernelized_rpe.h"
#include "ops/common.h"
#include "ops/views.h"

namespace longattn::ops {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

constexpr const char* kOp = "kernelized_rpe_attention";

template <class T>
kernels::KernelizedRpeParams<T> make_params(const at::Tensor& fq, const at::Tensor& fk,
                                            const at::Tensor& v, const at::Tensor& w,
                                            const OptTensor& mask, bool causal, double eps) {
  kernels::KernelizedRpeParams<T> p;
  p.phi_q = bhnd<const T>(fq);
  p.phi_k = bhnd<const T>(fk);
  p.v = bhnd<const T>(v);
  p.weights = w.data_ptr<T>();
  p.weights_stride_h = w.stride(0);
  const KeyMaskView km = key_mask_view(mask);
  p.key_padding_mask = km.data;
  p.mask_stride_b = km.stride_b;
  p.causal = causal;
  p.eps = eps;
  p.threads = at::get_num_threads();
  return p;
}

std::tuple<at::Tensor, at::Tensor> forward_cpu(const at::Tensor& fq, const at::Tensor& fk,
                                               const at::Tensor& v, const at::Tensor& w,
                                               const OptTensor& mask, bool causal, double eps) {
  const int64_t B = fq.size(0), H = fq.size(1), N = fq.size(2), Dv = v.size(3);
  at::Tensor out = at::zeros({B, H, N, Dv}, v.options());
  at::Tensor den = at::zeros({B, H, N}, v.options());
  if (B * H * N == 0) return {out, den};
  AT_DISPATCH_FLOATING_TYPES(fq.scalar_type(), "kernelized_rpe_forward", [&] {
    kernels::kernelized_rpe_forward<scalar_t>(make_params<scalar_t>(fq, fk, v, w, mask, causal, eps),
                                              bhnd<scalar_t>(out), den.data_ptr<scalar_t>());
  });
  return {out, den};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& fq, const at::Tensor& fk, const at::Tensor& v,
    const at::Tensor& w, const at::Tensor& out, const at::Tensor& den, const OptTensor& mask,
    bool causal, double eps) {
  at::Tensor gq = at::zeros(fq.sizes(), fq.options());
  at::Tensor gk = at::zeros(fk.sizes(), fk.options());
  at::Tensor gv = at::zeros(v.sizes(), v.options());
  at::Tensor gw = at::zeros(w.sizes(), w.options());
  if (fq.size(0) * fq.size(1) * fq.size(2) == 0) return {gq, gk, gv, gw};
  at::Tensor go = last_dim_contiguous(grad_out);
  AT_DISPATCH_FLOATING_TYPES(fq.scalar_type(), "kernelized_rpe_backward", [&] {
    kernels::KernelizedRpeGrads<scalar_t> g{bhnd<const scalar_t>(out), den.data_ptr<scalar_t>(),
                                            bhnd<const scalar_t>(go),   bhnd<scalar_t>(gq),
                                            bhnd<scalar_t>(gk),         bhnd<scalar_t>(gv),
                                            gw.data_ptr<scalar_t>()};
    kernels::kernelized_rpe_backward<scalar_t>(
        make_params<scalar_t>(fq, fk, v, w, mask, causal, eps), g);
  });
  return {gq, gk, gv, gw};
}

// Meta kernels: the outputs' shapes and dtypes (sizes may be symbols under torch.compile).
std::tuple<at::Tensor, at::Tensor> forward_meta(const at::Tensor& fq, const at::Tensor& /*fk*/,
                                                const at::Tensor& v, const at::Tensor& /*w*/,
                                                const OptTensor& /*mask*/, bool /*causal*/, double /*eps*/) {
  return {empty_like_sizes(v, {fq.sym_size(0), fq.sym_size(1), fq.sym_size(2), v.sym_size(3)}),
          empty_like_sizes(v, {fq.sym_size(0), fq.sym_size(1), fq.sym_size(2)})};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward_meta(
    const at::Tensor& /*grad_out*/, const at::Tensor& fq, const at::Tensor& fk, const at::Tensor& v,
    const at::Tensor& w, const at::Tensor& /*out*/, const at::Tensor& /*den*/, const OptTensor& /*mask*/,
    bool /*causal*/, double /*eps*/) {
  return {empty_like_sizes(fq, fq.sym_sizes()), empty_like_sizes(fk, fk.sym_sizes()),
          empty_like_sizes(v, v.sym_sizes()), empty_like_sizes(w, w.sym_sizes())};
}

class KernelizedRpeFunction : public torch::autograd::Function<KernelizedRpeFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& fq, const at::Tensor& fk,
                            const at::Tensor& v, const at::Tensor& w, const OptTensor& mask,
                            bool causal, double eps) {
    static auto op = op_handle<decltype(forward_cpu)>("longattn::_kernelized_rpe_forward");
    auto [out, den] = op.call(fq, fk, v, w, mask, causal, eps);
    ctx->save_for_backward({fq, fk, v, w, out, den, saved(mask)});
    ctx->saved_data["causal"] = causal;
    ctx->saved_data["eps"] = eps;
    return out;
  }
  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    static auto op = op_handle<decltype(backward_cpu)>("longattn::_kernelized_rpe_backward");
    auto s = ctx->get_saved_variables();
    auto [gq, gk, gv, gw] = op.call(grads[0], s[0], s[1], s[2], s[3], s[4], s[5], unsaved(s[6]),
                                    ctx->saved_data["causal"].toBool(),
                                    ctx->saved_data["eps"].toDouble());
    return {gq, gk, gv, gw, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

// Exposed (not in the anonymous namespace) so that kernelized_attention's rel_bias path can
// call it after applying its feature maps.
at::Tensor kernelized_rpe_from_features(const at::Tensor& phi_q, const at::Tensor& phi_k,
                                        const at::Tensor& v, const at::Tensor& rel_bias,
                                        bool causal, const OptTensor& key_padding_mask,
                                        double eps) {
  const c10::SymInt N = phi_q.sym_size(2);
  // Weights exp(b - max b), max over the offsets that take part (r <= 0 when causal), so the
  // largest weight is 1 and exp cannot overflow. With eps = 0 the shift cancels between
  // numerator and denominator; with eps > 0 it sets the scale eps is compared with (as in
  // kernelized_attention), and autograd carries its exact gradient to the maximal offset.
  at::Tensor used = causal ? rel_bias.narrow_symint(1, 0, N) : rel_bias;
  at::Tensor shift = used.sym_numel() > 0
                         ? std::get<0>(used.max(1, true))
                         : at::zeros_symint({rel_bias.sym_size(0), 1}, rel_bias.options());
  at::Tensor w = (rel_bias - shift).exp();
  const OptTensor mask = given(key_padding_mask) ? OptTensor(key_padding_mask->contiguous())
                                                : c10::nullopt;
  return KernelizedRpeFunction::apply(last_dim_contiguous(phi_q), last_dim_contiguous(phi_k),
                                      last_dim_contiguous(v), w.contiguous(), mask, causal, eps);
}

namespace {

at::Tensor kernelized_rpe_impl(const at::Tensor& phi_q, const at::Tensor& phi_k,
                               const at::Tensor& v, const at::Tensor& rel_bias, bool causal,
                               const OptTensor& key_padding_mask, double eps) {
  check_rank(kOp, "phi_q", phi_q, 4, "[B, H, N, m]");
  check_rank(kOp, "phi_k", phi_k, 4, "[B, H, N, m]");
  check_rank(kOp, "v", v, 4, "[B, H, N, Dv]");
  check_float_dtype(kOp, "phi_q", phi_q);
  check_same_dtype_device(kOp, "phi_q", phi_q, "phi_k", phi_k);
  check_same_dtype_device(kOp, "phi_q", phi_q, "v", v);
  check_same_dtype_device(kOp, "phi_q", phi_q, "rel_bias", rel_bias);
  check_cpu(kOp, phi_q);
  const c10::SymInt B = phi_q.sym_size(0), H = phi_q.sym_size(1), N = phi_q.sym_size(2);
  check_shape(kOp, "phi_k", phi_k, {B, H, N, phi_q.sym_size(3)}, "[B, H, N, m] (as phi_q: Nq == Nk)");
  check_shape(kOp, "v", v, {B, H, N, -1}, "[B, H, N, Dv]");
  check_rank(kOp, "rel_bias", rel_bias, 2, "[H, 2N-1]");
  check_shape(kOp, "rel_bias", rel_bias, {H, offsets_len(N)}, "[H, 2N-1]");
  checked_key_mask(kOp, key_padding_mask, B, N);
  if (!(eps >= 0)) fail(kOp, "eps must be >= 0, got " + std::to_string(eps));
  return kernelized_rpe_from_features(phi_q, phi_k, v, rel_bias, causal, key_padding_mask, eps);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(longattn, m) {
  m.def(
      "kernelized_rpe_attention(Tensor phi_q, Tensor phi_k, Tensor v, Tensor rel_bias, *, "
      "bool causal=False, Tensor? key_padding_mask=None, float eps=0.0) -> Tensor");
  m.def(
      "_kernelized_rpe_forward(Tensor phi_q, Tensor phi_k, Tensor v, Tensor weights, "
      "Tensor? key_padding_mask, bool causal, float eps) -> (Tensor, Tensor)");
  m.def(
      "_kernelized_rpe_backward(Tensor grad_out, Tensor phi_q, Tensor phi_k, Tensor v, "
      "Tensor weights, Tensor out, Tensor den, Tensor? key_padding_mask, bool causal, float eps) "
      "-> (Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(longattn, CPU, m) {
  m.impl("_kernelized_rpe_forward", forward_cpu);
  m.impl("_kernelized_rpe_backward", backward_cpu);
}

TORCH_LIBRARY_IMPL(longattn, Meta, m) {
  m.impl("_kernelized_rpe_forward", forward_meta);
  m.impl("_kernelized_rpe_backward", backward_meta);
}

TORCH_LIBRARY_IMPL(longattn, CompositeImplicitAutograd, m) {
  m.impl("kernelized_rpe_attention", kernelized_rpe_impl);
}

}  // namespace longattn::ops

namespace longattn {

at::Tensor kernelized_rpe_attention(const at::Tensor& phi_q, const at::Tensor& phi_k,
                                    const at::Tensor& v, const at::Tensor& rel_bias,
                                    const KernelizedRpeOptions& o) {
  static auto op =
      ops::op_handle<decltype(ops::kernelized_rpe_impl)>("longattn::kernelized_rpe_attention");
  return op.call(phi_q, phi_k, v, rel_bias, o.causal, o.key_padding_mask, o.eps);
}

}  // namespace longattn
