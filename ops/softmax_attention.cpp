// torch binding of the fused exact softmax attention kernel.
#include <ATen/Parallel.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <cmath>

#include "kernels/softmax_attention/softmax_attention.h"
#include "longattn/softmax_attention.h"
#include "ops/common.h"
#include "ops/masked_rows.h"
#include "ops/reference/softmax_attention.h"
#include "ops/views.h"

namespace longattn::ops {
namespace {

constexpr const char* kOp = "softmax_attention";

template <class T>
kernels::SoftmaxAttentionParams<T> make_params(const at::Tensor& q, const at::Tensor& k,
                                               const at::Tensor& v, const OptTensor& mask,
                                               const OptTensor& bias, bool causal, double scale) {
  kernels::SoftmaxAttentionParams<T> p;
  p.q = bhnd<const T>(q);
  p.k = bhnd<const T>(k);
  p.v = bhnd<const T>(v);
  const KeyMaskView km = key_mask_view(mask);
  p.key_padding_mask = km.data;
  p.mask_stride_b = km.stride_b;
  if (given(bias)) {
    p.rel_bias = bias->data_ptr<T>();
    p.rel_bias_stride_h = bias->stride(0);
  }
  p.causal = causal;
  p.scale = scale;
  p.threads = at::get_num_threads();
  return p;
}

// Inputs arrive checked and with contiguous last dims (the mask and bias fully contiguous).
std::tuple<at::Tensor, at::Tensor> forward_cpu(const at::Tensor& q, const at::Tensor& k,
                                               const at::Tensor& v, const OptTensor& mask,
                                               const OptTensor& bias, bool causal, double scale) {
  if (is_half(q)) {  // computed in float32 (ops/common.h); lse stays float32
    auto [out, lse] = forward_cpu(to_float32(q), to_float32(k), to_float32(v), mask, to_float32(bias), causal, scale);
    return {as_dtype_of(out, v), lse};
  }
  const int64_t B = q.size(0), H = q.size(1), Nq = q.size(2), Dv = v.size(3);
  at::Tensor out = at::empty({B, H, Nq, Dv}, v.options());
  at::Tensor lse = at::empty({B, H, Nq}, q.options());
  if (out.numel() == 0 || k.size(2) == 0) {
    out.zero_();
    lse.fill_(-INFINITY);
    return {out, lse};
  }
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "softmax_attention_forward", [&] {
    auto p = make_params<scalar_t>(q, k, v, mask, bias, causal, scale);
    kernels::softmax_attention_forward<scalar_t>(p, bhnd<scalar_t>(out), lse.data_ptr<scalar_t>());
  });
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const at::Tensor& out, const at::Tensor& lse, const OptTensor& mask, const OptTensor& bias,
    bool causal, double scale) {
  if (is_half(q)) {  // computed in float32 (ops/common.h), returned in the inputs' dtypes
    auto [gq, gk, gv, gb] = backward_cpu(to_float32(grad_out), to_float32(q), to_float32(k), to_float32(v),
                                         to_float32(out), lse, mask, to_float32(bias), causal, scale);
    return {as_dtype_of(gq, q), as_dtype_of(gk, k), as_dtype_of(gv, v), given(bias) ? as_dtype_of(gb, bias) : as_dtype_of(gb, q)};
  }
  at::Tensor gq = at::empty(q.sizes(), q.options());
  at::Tensor gk = at::empty(k.sizes(), k.options());
  at::Tensor gv = at::empty(v.sizes(), v.options());
  const bool has_bias = given(bias);
  at::Tensor gb = has_bias ? at::empty(bias->sizes(), bias->options()) : at::empty({0}, q.options());
  if (out.numel() == 0 || k.size(2) == 0) {
    gq.zero_(); gk.zero_(); gv.zero_(); gb.zero_();
    return {gq, gk, gv, gb};
  }
  at::Tensor go = last_dim_contiguous(grad_out);
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "softmax_attention_backward", [&] {
    auto p = make_params<scalar_t>(q, k, v, mask, bias, causal, scale);
    kernels::SoftmaxAttentionGrads<scalar_t> g;
    g.out = bhnd<const scalar_t>(out);
    g.grad_out = bhnd<const scalar_t>(go);
    g.lse = lse.data_ptr<scalar_t>();
    g.grad_q = bhnd<scalar_t>(gq);
    g.grad_k = bhnd<scalar_t>(gk);
    g.grad_v = bhnd<scalar_t>(gv);
    g.grad_rel_bias = has_bias ? gb.data_ptr<scalar_t>() : nullptr;
    kernels::softmax_attention_backward<scalar_t>(p, g);
  });
  return {gq, gk, gv, gb};
}

// Meta kernels: the outputs' shapes and dtypes (sizes may be symbols under torch.compile).
std::tuple<at::Tensor, at::Tensor> forward_meta(const at::Tensor& q, const at::Tensor& /*k*/,
                                                const at::Tensor& v, const OptTensor& /*mask*/,
                                                const OptTensor& /*bias*/, bool /*causal*/, double /*scale*/) {
  return {empty_like_sizes(v, {q.sym_size(0), q.sym_size(1), q.sym_size(2), v.sym_size(3)}),
          at::empty_symint({q.sym_size(0), q.sym_size(1), q.sym_size(2)}, q.options().dtype(stat_dtype(q)))};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward_meta(
    const at::Tensor& /*grad_out*/, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const at::Tensor& /*out*/, const at::Tensor& /*lse*/, const OptTensor& /*mask*/, const OptTensor& bias,
    bool /*causal*/, double /*scale*/) {
  return {empty_like_sizes(q, q.sym_sizes()), empty_like_sizes(k, k.sym_sizes()),
          empty_like_sizes(v, v.sym_sizes()),
          given(bias) ? empty_like_sizes(*bias, bias->sym_sizes()) : empty_like_sizes(q, {0})};
}

class SoftmaxAttentionFunction : public torch::autograd::Function<SoftmaxAttentionFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& q,
                            const at::Tensor& k, const at::Tensor& v, const OptTensor& mask,
                            const OptTensor& bias, bool causal, double scale, bool use_reference) {
    static auto op = op_handle<decltype(forward_cpu)>("longattn::_softmax_attention_forward");
    auto [out, lse] = calls_reference_directly(use_reference, q)
                          ? reference::softmax_attention_forward(q, k, v, mask, bias, causal, scale)
                          : op.call(q, k, v, mask, bias, causal, scale);
    ctx->save_for_backward({q, k, v, out, lse, saved(mask), saved(bias)});
    ctx->saved_data["causal"] = causal;
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["reference"] = use_reference;
    return out;
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grads) {
    static auto op = op_handle<decltype(backward_cpu)>("longattn::_softmax_attention_backward");
    auto s = ctx->get_saved_variables();
    const OptTensor bias = unsaved(s[6]);
    const bool causal = ctx->saved_data["causal"].toBool();
    const double scale = ctx->saved_data["scale"].toDouble();
    auto [gq, gk, gv, gb] =
        calls_reference_directly(ctx->saved_data["reference"].toBool(), s[0])
            ? reference::softmax_attention_backward(grads[0], s[0], s[1], s[2], s[3], s[4], unsaved(s[5]),
                                                    bias, causal, scale)
            : op.call(grads[0], s[0], s[1], s[2], s[3], s[4], unsaved(s[5]), bias, causal, scale);
    return {gq, gk, gv, at::Tensor(), bias ? gb : at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

at::Tensor softmax_attention_impl(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                  bool causal, const OptTensor& key_padding_mask,
                                  const OptTensor& rel_bias, c10::optional<double> scale,
                                  c10::string_view path) {
  const bool use_reference = takes_reference_path(kOp, path, q);
  const QkvSizes n = check_qkv(kOp, q, k, v);
  if (causal) check_square(kOp, "causal=True", n.Nq, n.Nk);
  const OptTensor mask = checked_key_mask(kOp, key_padding_mask, n.B, n.Nk);
  OptTensor bias;
  if (given(rel_bias)) {
    check_square(kOp, "rel_bias", n.Nq, n.Nk);
    check_param_dtype_device(kOp, "q", q, "rel_bias", *rel_bias);
    check_shape(kOp, "rel_bias", *rel_bias, {n.H, offsets_len(n.Nq)}, "[H, 2N-1]");
    bias = rel_bias->contiguous();
  }
  if (n.D == 0 && n.B * n.H * n.Nq > 0) {
    // Head dim 0: every logit is the bias alone; the kernels want at least one feature.
    return softmax_attention_impl(q.new_zeros_symint({n.B, n.H, n.Nq, 1}),
                                  k.new_zeros_symint({n.B, n.H, n.Nk, 1}), v, causal,
                                  key_padding_mask, rel_bias, scale.value_or(1.0), path);
  }
  const double s = logit_scale(kOp, scale, n.D);
  return SoftmaxAttentionFunction::apply(last_dim_contiguous(q), last_dim_contiguous(zero_masked_rows(k, mask, 2)),
                                         last_dim_contiguous(zero_masked_rows(v, mask, 2)), mask, bias, causal, s,
                                         use_reference);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(longattn, m) {
  m.def(
      "softmax_attention(Tensor q, Tensor k, Tensor v, *, bool causal=False, "
      "Tensor? key_padding_mask=None, Tensor? rel_bias=None, float? scale=None, str path='fused') -> Tensor");
  m.def(
      "_softmax_attention_forward(Tensor q, Tensor k, Tensor v, Tensor? key_padding_mask, "
      "Tensor? rel_bias, bool causal, float scale) -> (Tensor, Tensor)");
  m.def(
      "_softmax_attention_backward(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor out, "
      "Tensor lse, Tensor? key_padding_mask, Tensor? rel_bias, bool causal, float scale) "
      "-> (Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(longattn, CPU, m) {
  m.impl("_softmax_attention_forward", forward_cpu);
  m.impl("_softmax_attention_backward", backward_cpu);
}

TORCH_LIBRARY_IMPL(longattn, Meta, m) {
  m.impl("_softmax_attention_forward", forward_meta);
  m.impl("_softmax_attention_backward", backward_meta);
}

// Every device without a fused kernel (CUDA, XPU, MPS, ...) gets the reference path.
TORCH_LIBRARY_IMPL(longattn, CompositeExplicitAutograd, m) {
  m.impl("_softmax_attention_forward", reference::softmax_attention_forward);
  m.impl("_softmax_attention_backward", reference::softmax_attention_backward);
}

TORCH_LIBRARY_IMPL(longattn, CompositeImplicitAutograd, m) {
  m.impl("softmax_attention", softmax_attention_impl);
}

}  // namespace longattn::ops

namespace longattn {

at::Tensor softmax_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                             const SoftmaxAttentionOptions& options) {
  static auto op = ops::op_handle<decltype(ops::softmax_attention_impl)>("longattn::softmax_attention");
  return op.call(q, k, v, options.causal, options.key_padding_mask, options.rel_bias,
                 options.scale, options.path);
}

}  // namespace longattn
