// torch binding of Luo et al.'s kernelized attention with RPE at the feature level:
// phi(q), phi(k) already mapped; the relative bias b goes to the kernel as it is (the kernel
// detrends and rescales it per row, kernels/kernelized_rpe/kernelized_rpe.h).
#include <ATen/Parallel.h>
#include <cmath>
#include <torch/autograd.h>
#include <torch/library.h>

#include "kernels/kernelized_rpe/kernelized_rpe.h"
#include "longattn/kernelized_rpe.h"
#include "ops/kernelized_rpe.h"
#include "ops/common.h"
#include "ops/views.h"
#include "ops/reference/kernelized_rpe.h"

namespace longattn::ops {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

constexpr const char* kOp = "kernelized_rpe_attention";

const uint8_t* mask_ptr(const OptTensor& mask) {
  return mask && mask->defined() ? reinterpret_cast<const uint8_t*>(mask->data_ptr<bool>()) : nullptr;
}

template <class T>
const T* opt_ptr(const OptTensor& t) {
  return t && t->defined() ? t->data_ptr<T>() : nullptr;
}

template <class T>
kernels::KernelizedRpeParams<T> make_params(const at::Tensor& fq, const at::Tensor& fk,
                                            const at::Tensor& v, const at::Tensor& b,
                                            const OptTensor& key_log_scale,
                                            const OptTensor& eps_log_scale, const OptTensor& mask,
                                            bool causal, double eps) {
  kernels::KernelizedRpeParams<T> p;
  p.phi_q = bhnd<const T>(fq);
  p.phi_k = bhnd<const T>(fk);
  p.v = bhnd<const T>(v);
  p.rel_bias = b.data_ptr<T>();
  p.bias_stride_h = b.size(0) > 1 ? b.stride(0) : 0;
  p.key_log_scale = opt_ptr<T>(key_log_scale);
  p.eps_log_scale = opt_ptr<T>(eps_log_scale);
  p.key_padding_mask = mask_ptr(mask);
  if (p.key_padding_mask) p.mask_stride_b = mask->stride(0);
  p.causal = causal;
  p.eps = eps;
  p.threads = at::get_num_threads();
  return p;
}

// Inputs arrive checked, last dims contiguous; rel_bias, the log-scales and the mask contiguous.
std::tuple<at::Tensor, at::Tensor, at::Tensor> forward_cpu(
    const at::Tensor& fq, const at::Tensor& fk, const at::Tensor& v, const at::Tensor& b,
    const OptTensor& key_log_scale, const OptTensor& eps_log_scale, const OptTensor& mask,
    bool causal, double eps) {
  if (is_half(fq)) {  // computed in float32 (ops/common.h); den stays float32
    auto [out, den, direct] = forward_cpu(to_float32(fq), to_float32(fk), to_float32(v), to_float32(b),
                                          to_float32(key_log_scale), to_float32(eps_log_scale), mask, causal, eps);
    return {as_dtype_of(out, v), den, direct};
  }
  // Every finite bias is exact (the kernel detrends it and resolves each row at its own
  // scale); -inf is an offset that takes no part. NaN and +inf have no meaning as a weight.
  // Checked here, on real values, not in the composite: a data-dependent check there would
  // stop torch.compile.
  const at::Tensor bad = b.isnan().logical_or(b == INFINITY);
  if (bad.any().item<bool>())
    fail(kOp, "rel_bias must be finite or -inf (an offset that takes no part), got " +
                  std::to_string(bad.sum().item<int64_t>()) + " NaN or +inf values");
  const int64_t B = fq.size(0), H = fq.size(1), N = fq.size(2), Dv = v.size(3);
  at::Tensor out = at::zeros({B, H, N, Dv}, v.options());
  at::Tensor den = at::zeros({B, H, N}, v.options());
  at::Tensor direct = at::zeros({B, H, N}, v.options().dtype(at::kByte));
  if (B * H * N == 0) return {out, den, direct};
  AT_DISPATCH_FLOATING_TYPES(fq.scalar_type(), "kernelized_rpe_forward", [&] {
    kernels::kernelized_rpe_forward<scalar_t>(
        make_params<scalar_t>(fq, fk, v, b, key_log_scale, eps_log_scale, mask, causal, eps),
        bhnd<scalar_t>(out), {den.data_ptr<scalar_t>(), direct.data_ptr<uint8_t>()});
  });
  return {out, den, direct};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& fq, const at::Tensor& fk, const at::Tensor& v,
    const at::Tensor& b, const OptTensor& key_log_scale, const OptTensor& eps_log_scale,
    const at::Tensor& out, const at::Tensor& den, const at::Tensor& direct, const OptTensor& mask,
    bool causal, double eps) {
  if (is_half(fq)) {  // computed in float32 (ops/common.h), returned in the inputs' dtypes
    auto [gq, gk, gv, gb, gl, gm] =
        backward_cpu(to_float32(grad_out), to_float32(fq), to_float32(fk), to_float32(v), to_float32(b),
                     to_float32(key_log_scale), to_float32(eps_log_scale), to_float32(out), den, direct, mask,
                     causal, eps);
    // The log-scales' gradients stay float32 (stat_dtype), as the log-scales themselves.
    return {as_dtype_of(gq, fq), as_dtype_of(gk, fk), as_dtype_of(gv, v), as_dtype_of(gb, b), gl, gm};
  }
  at::Tensor gq = at::zeros(fq.sizes(), fq.options());
  at::Tensor gk = at::zeros(fk.sizes(), fk.options());
  at::Tensor gv = at::zeros(v.sizes(), v.options());
  at::Tensor gb = at::zeros(b.sizes(), b.options());
  at::Tensor gl = at::zeros(fq.sizes().slice(0, 3), fq.options());
  at::Tensor gm = at::zeros(fq.sizes().slice(0, 3), fq.options());
  if (fq.size(0) * fq.size(1) * fq.size(2) == 0) return {gq, gk, gv, gb, gl, gm};
  at::Tensor go = last_dim_contiguous(grad_out);
  AT_DISPATCH_FLOATING_TYPES(fq.scalar_type(), "kernelized_rpe_backward", [&] {
    kernels::KernelizedRpeGrads<scalar_t> g;
    g.out = bhnd<const scalar_t>(out);
    g.den = den.data_ptr<scalar_t>();
    g.direct = direct.data_ptr<uint8_t>();
    g.grad_out = bhnd<const scalar_t>(go);
    g.grad_phi_q = bhnd<scalar_t>(gq);
    g.grad_phi_k = bhnd<scalar_t>(gk);
    g.grad_v = bhnd<scalar_t>(gv);
    g.grad_rel_bias = gb.data_ptr<scalar_t>();
    g.grad_key_log_scale = gl.data_ptr<scalar_t>();
    g.grad_eps_log_scale = gm.data_ptr<scalar_t>();
    kernels::kernelized_rpe_backward<scalar_t>(
        make_params<scalar_t>(fq, fk, v, b, key_log_scale, eps_log_scale, mask, causal, eps), g);
  });
  return {gq, gk, gv, gb, gl, gm};
}

// Meta kernels: the outputs' shapes and dtypes (sizes may be symbols under torch.compile).
std::tuple<at::Tensor, at::Tensor, at::Tensor> forward_meta(
    const at::Tensor& fq, const at::Tensor& /*fk*/, const at::Tensor& v, const at::Tensor& /*b*/,
    const OptTensor& /*key_log_scale*/, const OptTensor& /*eps_log_scale*/, const OptTensor& /*mask*/,
    bool /*causal*/, double /*eps*/) {
  const c10::SymInt B = fq.sym_size(0), H = fq.sym_size(1), N = fq.sym_size(2);
  return {empty_like_sizes(v, {B, H, N, v.sym_size(3)}), at::empty_symint({B, H, N}, v.options().dtype(stat_dtype(v))),
          at::empty_symint({B, H, N}, v.options().dtype(at::kByte))};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward_meta(
    const at::Tensor& /*grad_out*/, const at::Tensor& fq, const at::Tensor& fk, const at::Tensor& v,
    const at::Tensor& b, const OptTensor& /*key_log_scale*/, const OptTensor& /*eps_log_scale*/,
    const at::Tensor& /*out*/, const at::Tensor& /*den*/, const at::Tensor& /*direct*/,
    const OptTensor& /*mask*/, bool /*causal*/, double /*eps*/) {
  const c10::SymInt B = fq.sym_size(0), H = fq.sym_size(1), N = fq.sym_size(2);
  return {empty_like_sizes(fq, fq.sym_sizes()), empty_like_sizes(fk, fk.sym_sizes()),
          empty_like_sizes(v, v.sym_sizes()),   empty_like_sizes(b, b.sym_sizes()),
          at::empty_symint({B, H, N}, fq.options().dtype(stat_dtype(fq))),
          at::empty_symint({B, H, N}, fq.options().dtype(stat_dtype(fq)))};
}

class KernelizedRpeFunction : public torch::autograd::Function<KernelizedRpeFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& fq, const at::Tensor& fk,
                            const at::Tensor& v, const at::Tensor& b, const OptTensor& kls,
                            const OptTensor& els, const OptTensor& mask, bool causal, double eps,
                            bool reference) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("longattn::_kernelized_rpe_forward", "")
                         .typed<decltype(forward_cpu)>();
    // The reference path on CPU is called directly (the dispatcher would pick the CPU kernel);
    // on other devices the dispatcher's CompositeExplicitAutograd kernel is the same function.
    reference = calls_reference_directly(reference, fq);
    auto [out, den, direct] = reference ? reference::kernelized_rpe_forward(fq, fk, v, b, kls, els, mask, causal, eps)
                                        : op.call(fq, fk, v, b, kls, els, mask, causal, eps);
    ctx->save_for_backward({fq, fk, v, b, kls ? *kls : at::Tensor(), els ? *els : at::Tensor(), out,
                            den, direct, mask ? *mask : at::Tensor()});
    ctx->saved_data["causal"] = causal;
    ctx->saved_data["eps"] = eps;
    ctx->saved_data["reference"] = reference;
    return out;
  }
  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    static auto op = op_handle<decltype(backward_cpu)>("longattn::_kernelized_rpe_backward");
    auto s = ctx->get_saved_variables();
    auto opt = [](const at::Tensor& t) { return t.defined() ? OptTensor(t) : c10::nullopt; };
    const bool causal = ctx->saved_data["causal"].toBool();
    const double eps = ctx->saved_data["eps"].toDouble();
    auto [gq, gk, gv, gb, gl, gm] =
        ctx->saved_data["reference"].toBool()
            ? reference::kernelized_rpe_backward(grads[0], s[0], s[1], s[2], s[3], opt(s[4]), opt(s[5]), s[6], s[7],
                                                 s[8], opt(s[9]), causal, eps)
            : op.call(grads[0], s[0], s[1], s[2], s[3], opt(s[4]), opt(s[5]), s[6], s[7], s[8], opt(s[9]), causal,
                      eps);
    return {gq, gk, gv, gb, s[4].defined() ? gl : at::Tensor(), s[5].defined() ? gm : at::Tensor(),
            at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

// Exposed (not in the anonymous namespace) so that kernelized_attention's rel_bias path can
// call it after applying its feature maps.
at::Tensor kernelized_rpe_from_features(const at::Tensor& phi_q, const at::Tensor& phi_k,
                                        const at::Tensor& v, const at::Tensor& rel_bias,
                                        bool causal, const OptTensor& key_padding_mask,
                                        double eps, const OptTensor& key_log_scale,
                                        const OptTensor& eps_log_scale, bool reference) {
  OptTensor mask, kls, els;
  if (key_padding_mask && key_padding_mask->defined()) mask = key_padding_mask->contiguous();
  if (key_log_scale && key_log_scale->defined()) kls = key_log_scale->contiguous();
  if (eps_log_scale && eps_log_scale->defined()) els = eps_log_scale->contiguous();
  return KernelizedRpeFunction::apply(last_dim_contiguous(phi_q), last_dim_contiguous(phi_k),
                                      last_dim_contiguous(v), rel_bias.contiguous(), kls, els,
                                      mask, causal, eps, reference);
}

namespace {

at::Tensor kernelized_rpe_impl(const at::Tensor& phi_q, const at::Tensor& phi_k,
                               const at::Tensor& v, const at::Tensor& rel_bias, bool causal,
                               const OptTensor& key_padding_mask, double eps, c10::string_view path) {
  check_rank(kOp, "phi_q", phi_q, 4, "[B, H, N, m]");
  check_rank(kOp, "phi_k", phi_k, 4, "[B, H, N, m]");
  check_rank(kOp, "v", v, 4, "[B, H, N, Dv]");
  check_float_dtype(kOp, "phi_q", phi_q);
  check_same_dtype_device(kOp, "phi_q", phi_q, "phi_k", phi_k);
  check_same_dtype_device(kOp, "phi_q", phi_q, "v", v);
  check_param_dtype_device(kOp, "phi_q", phi_q, "rel_bias", rel_bias);
  const bool reference = takes_reference_path(kOp, path, phi_q);
  const c10::SymInt B = phi_q.sym_size(0), H = phi_q.sym_size(1), N = phi_q.sym_size(2);
  check_shape(kOp, "phi_k", phi_k, {B, H, N, phi_q.sym_size(3)}, "[B, H, N, m] (as phi_q: Nq == Nk)");
  check_shape(kOp, "v", v, {B, H, N, -1}, "[B, H, N, Dv]");
  check_rank(kOp, "rel_bias", rel_bias, 2, "[H, 2N-1]");
  check_shape(kOp, "rel_bias", rel_bias, {H, offsets_len(N)}, "[H, 2N-1]");
  if (key_padding_mask && key_padding_mask->defined())
    check_key_padding_mask(kOp, *key_padding_mask, B, N);
  if (!(eps >= 0) || !std::isfinite(eps))
    fail(kOp, "eps must be finite and >= 0, got " + std::to_string(eps));
  return kernelized_rpe_from_features(phi_q, phi_k, v, rel_bias, causal, key_padding_mask, eps, {},
                                      {}, reference);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(longattn, m) {
  m.def(
      "kernelized_rpe_attention(Tensor phi_q, Tensor phi_k, Tensor v, Tensor rel_bias, *, "
      "bool causal=False, Tensor? key_padding_mask=None, float eps=0.0, str path='fused') -> Tensor");
  m.def(
      "_kernelized_rpe_forward(Tensor phi_q, Tensor phi_k, Tensor v, Tensor rel_bias, "
      "Tensor? key_log_scale, Tensor? eps_log_scale, Tensor? key_padding_mask, bool causal, "
      "float eps) -> (Tensor, Tensor, Tensor)");
  m.def(
      "_kernelized_rpe_backward(Tensor grad_out, Tensor phi_q, Tensor phi_k, Tensor v, "
      "Tensor rel_bias, Tensor? key_log_scale, Tensor? eps_log_scale, Tensor out, Tensor den, "
      "Tensor direct, Tensor? key_padding_mask, bool causal, float eps) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(longattn, CPU, m) {
  m.impl("_kernelized_rpe_forward", forward_cpu);
  m.impl("_kernelized_rpe_backward", backward_cpu);
}

TORCH_LIBRARY_IMPL(longattn, Meta, m) {
  m.impl("_kernelized_rpe_forward", forward_meta);
  m.impl("_kernelized_rpe_backward", backward_meta);
}

// The reference path (ops/reference/kernelized_rpe.cpp): every device without a fused kernel
// (CUDA, XPU, MPS, ...) reaches it; CPU keeps its CPU kernels, Meta its Meta kernels.
TORCH_LIBRARY_IMPL(longattn, CompositeExplicitAutograd, m) {
  m.impl("_kernelized_rpe_forward", reference::kernelized_rpe_forward);
  m.impl("_kernelized_rpe_backward", reference::kernelized_rpe_backward);
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
  return op.call(phi_q, phi_k, v, rel_bias, o.causal, o.key_padding_mask, o.eps, o.path);
}

}  // namespace longattn
