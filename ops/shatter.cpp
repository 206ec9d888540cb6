// torch binding of the Shatter attention kernels (kernels/shatter).
#include <ATen/Parallel.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <cmath>

#include "kernels/shatter/shatter.h"
#include "longattn/shatter.h"
#include "ops/common.h"
#include "ops/masked_rows.h"
#include "ops/reference/shatter.h"
#include "ops/reference/softmax_attention.h"
#include "ops/views.h"

namespace longattn::ops {
namespace {

constexpr const char* kOp = "shatter_attention";

// A [B, N, D] tensor (last dimension contiguous) as a one-head [B, 1, N, D] view.
template <class T>
kernels::BHND<T> one_head(const at::Tensor& t) {
  TORCH_INTERNAL_ASSERT(t.dim() == 3 && (t.stride(2) == 1 || t.size(2) <= 1));
  return kernels::BHND<T>{t.data_ptr<std::remove_const_t<T>>(), t.size(0), 1, t.size(1), t.size(2),
                          t.stride(0), 0, t.stride(1)};
}

template <class T>
kernels::ShatterParams<T> make_params(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                      const at::Tensor& partition, const OptTensor& mask,
                                      int64_t activation, bool causal, double scale) {
  kernels::ShatterParams<T> p;
  p.q = one_head<const T>(q);
  p.k = one_head<const T>(k);
  p.v = bhnd<const T>(v);
  p.partition = partition.data_ptr<T>();
  p.partition_stride_p = partition.stride(0);
  const KeyMaskView km = key_mask_view(mask);
  p.key_padding_mask = km.data;
  p.mask_stride_b = km.stride_b;
  p.activation = static_cast<kernels::ShatterActivation>(activation);
  p.causal = causal;
  p.scale = scale;
  p.threads = at::get_num_threads();
  return p;
}

// Nothing to attend over or nothing to produce: every output and gradient is zero.
bool degenerate(const at::Tensor& q, const at::Tensor& v) {
  return q.size(0) == 0 || q.size(1) == 0 || v.size(1) == 0 || v.size(3) == 0;
}

// Inputs arrive checked, with contiguous last dims (mask and partition fully contiguous).
std::tuple<at::Tensor, at::Tensor> forward_cpu(const at::Tensor& q, const at::Tensor& k,
                                               const at::Tensor& v, const at::Tensor& partition,
                                               const OptTensor& mask, int64_t activation,
                                               bool causal, double scale) {
  if (is_half(q)) {  // computed in float32 (ops/common.h); lse stays float32
    auto [out, lse] = forward_cpu(to_float32(q), to_float32(k), to_float32(v), to_float32(partition), mask,
                                  activation, causal, scale);
    return {as_dtype_of(out, v), lse};
  }
  const int64_t B = q.size(0), N = q.size(1), Dv = v.size(3);
  at::Tensor out = at::empty({B, N, Dv}, v.options());
  at::Tensor lse = at::empty({B, N}, q.options());
  if (degenerate(q, v)) {
    out.zero_();
    lse.fill_(activation == int64_t(kernels::ShatterActivation::sigmoid) ? 0.0 : -INFINITY);
    return {out, lse};
  }
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "shatter_attention_forward", [&] {
    auto p = make_params<scalar_t>(q, k, v, partition, mask, activation, causal, scale);
    kernels::shatter_forward<scalar_t>(p, one_head<scalar_t>(out), lse.data_ptr<scalar_t>());
  });
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const at::Tensor& partition, const at::Tensor& out, const at::Tensor& lse, const OptTensor& mask,
    int64_t activation, bool causal, double scale) {
  if (is_half(q)) {  // computed in float32 (ops/common.h), returned in the inputs' dtypes
    auto [gq, gk, gv, gp] = backward_cpu(to_float32(grad_out), to_float32(q), to_float32(k), to_float32(v),
                                         to_float32(partition), to_float32(out), lse, mask, activation, causal, scale);
    return {as_dtype_of(gq, q), as_dtype_of(gk, k), as_dtype_of(gv, v), as_dtype_of(gp, partition)};
  }
  at::Tensor gq = at::empty(q.sizes(), q.options());
  at::Tensor gk = at::empty(k.sizes(), k.options());
  at::Tensor gv = at::empty(v.sizes(), v.options());
  at::Tensor gp = at::empty(partition.sizes(), partition.options());
  if (degenerate(q, v)) {
    gq.zero_(), gk.zero_(), gv.zero_(), gp.zero_();
    return {gq, gk, gv, gp};
  }
  at::Tensor go = last_dim_contiguous(grad_out);
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "shatter_attention_backward", [&] {
    auto p = make_params<scalar_t>(q, k, v, partition, mask, activation, causal, scale);
    kernels::ShatterGrads<scalar_t> g;
    g.out = one_head<const scalar_t>(out);
    g.grad_out = one_head<const scalar_t>(go);
    g.lse = lse.data_ptr<scalar_t>();
    g.grad_q = one_head<scalar_t>(gq);
    g.grad_k = one_head<scalar_t>(gk);
    g.grad_v = bhnd<scalar_t>(gv);
    g.grad_partition = gp.data_ptr<scalar_t>();
    kernels::shatter_backward<scalar_t>(p, g);
  });
  return {gq, gk, gv, gp};
}

// Meta kernels: the outputs' shapes and dtypes (sizes may be symbols under torch.compile).
std::tuple<at::Tensor, at::Tensor> forward_meta(const at::Tensor& q, const at::Tensor& /*k*/,
                                                const at::Tensor& v, const at::Tensor& /*partition*/,
                                                const OptTensor& /*mask*/, int64_t /*activation*/,
                                                bool /*causal*/, double /*scale*/) {
  return {empty_like_sizes(v, {q.sym_size(0), q.sym_size(1), v.sym_size(3)}),
          at::empty_symint({q.sym_size(0), q.sym_size(1)}, q.options().dtype(stat_dtype(q)))};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward_meta(
    const at::Tensor& /*grad_out*/, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const at::Tensor& partition, const at::Tensor& /*out*/, const at::Tensor& /*lse*/, const OptTensor& /*mask*/,
    int64_t /*activation*/, bool /*causal*/, double /*scale*/) {
  return {empty_like_sizes(q, q.sym_sizes()), empty_like_sizes(k, k.sym_sizes()),
          empty_like_sizes(v, v.sym_sizes()), empty_like_sizes(partition, partition.sym_sizes())};
}

class ShatterFunction : public torch::autograd::Function<ShatterFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& q,
                            const at::Tensor& k, const at::Tensor& v, const at::Tensor& partition,
                            const OptTensor& mask, int64_t activation, bool causal, double scale,
                            bool use_reference) {
    static auto op = op_handle<decltype(forward_cpu)>("longattn::_shatter_attention_forward");
    auto [out, lse] =
        calls_reference_directly(use_reference, q)
            ? reference::shatter_attention_forward(q, k, v, partition, mask, activation, causal, scale)
            : op.call(q, k, v, partition, mask, activation, causal, scale);
    ctx->save_for_backward({q, k, v, partition, out, lse, saved(mask)});
    ctx->saved_data["activation"] = activation;
    ctx->saved_data["causal"] = causal;
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["reference"] = use_reference;
    return out;
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grads) {
    static auto op = op_handle<decltype(backward_cpu)>("longattn::_shatter_attention_backward");
    auto s = ctx->get_saved_variables();
    const int64_t activation = ctx->saved_data["activation"].toInt();
    const bool causal = ctx->saved_data["causal"].toBool();
    const double scale = ctx->saved_data["scale"].toDouble();
    auto [gq, gk, gv, gp] =
        calls_reference_directly(ctx->saved_data["reference"].toBool(), s[0])
            ? reference::shatter_attention_backward(grads[0], s[0], s[1], s[2], s[3], s[4], s[5], unsaved(s[6]),
                                                    activation, causal, scale)
            : op.call(grads[0], s[0], s[1], s[2], s[3], s[4], s[5], unsaved(s[6]), activation, causal, scale);
    return {gq, gk, gv, gp, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

at::Tensor shatter_attention_impl(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                  const at::Tensor& partition, c10::string_view activation,
                                  bool causal, const OptTensor& key_padding_mask,
                                  c10::optional<double> scale, c10::string_view path) {
  const int64_t act = option_code(kOp, "activation", activation, {"softmax", "sigmoid"});
  const bool use_reference = takes_reference_path(kOp, path, q);
  check_rank(kOp, "q", q, 3, "[B, N, D]");
  check_rank(kOp, "k", k, 3, "[B, N, D]");
  check_rank(kOp, "v", v, 4, "[B, P, N, Dv]");
  check_rank(kOp, "partition", partition, 2, "[P, 2N-1]");
  check_float_dtype(kOp, "q", q);
  check_same_dtype_device(kOp, "q", q, "k", k);
  check_same_dtype_device(kOp, "q", q, "v", v);
  check_param_dtype_device(kOp, "q", q, "partition", partition);
  const c10::SymInt B = q.sym_size(0), N = q.sym_size(1), D = q.sym_size(2);
  check_shape(kOp, "k", k, {B, N, D}, "[B, N, D]");
  check_shape(kOp, "v", v, {B, -1, N, -1}, "[B, P, N, Dv]");
  check_shape(kOp, "partition", partition, {v.sym_size(1), offsets_len(N)}, "[P, 2N-1]");
  const OptTensor mask = checked_key_mask(kOp, key_padding_mask, B, N);
  if (D == 0 && B * N > 0) {
    // Head dim 0: every score is 0; the kernels want at least one feature.
    return shatter_attention_impl(q.new_zeros_symint({B, N, 1}), k.new_zeros_symint({B, N, 1}), v,
                                  partition, activation, causal, key_padding_mask,
                                  scale.value_or(1.0), path);
  }
  const double s = logit_scale(kOp, scale, D);
  return ShatterFunction::apply(last_dim_contiguous(q), last_dim_contiguous(zero_masked_rows(k, mask, 1)), last_dim_contiguous(zero_masked_rows(v, mask, 2)),
                                partition.contiguous(), mask, act, causal, s, use_reference);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(longattn, m) {
  m.def(
      "shatter_attention(Tensor q, Tensor k, Tensor v, Tensor partition, *, str activation='softmax', "
      "bool causal=False, Tensor? key_padding_mask=None, float? scale=None, str path='fused') -> Tensor");
  m.def(
      "_shatter_attention_forward(Tensor q, Tensor k, Tensor v, Tensor partition, "
      "Tensor? key_padding_mask, int activation, bool causal, float scale) -> (Tensor, Tensor)");
  m.def(
      "_shatter_attention_backward(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor partition, "
      "Tensor out, Tensor lse, Tensor? key_padding_mask, int activation, bool causal, float scale) "
      "-> (Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(longattn, CPU, m) {
  m.impl("_shatter_attention_forward", forward_cpu);
  m.impl("_shatter_attention_backward", backward_cpu);
}

TORCH_LIBRARY_IMPL(longattn, Meta, m) {
  m.impl("_shatter_attention_forward", forward_meta);
  m.impl("_shatter_attention_backward", backward_meta);
}

// Every device without a fused kernel (CUDA, XPU, MPS, ...) gets the reference path.
TORCH_LIBRARY_IMPL(longattn, CompositeExplicitAutograd, m) {
  m.impl("_shatter_attention_forward", reference::shatter_attention_forward);
  m.impl("_shatter_attention_backward", reference::shatter_attention_backward);
}

TORCH_LIBRARY_IMPL(longattn, CompositeImplicitAutograd, m) {
  m.impl("shatter_attention", shatter_attention_impl);
}

}  // namespace longattn::ops

namespace longattn {

at::Tensor shatter_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                             const at::Tensor& partition, const ShatterAttentionOptions& options) {
  static auto op =
      ops::op_handle<decltype(ops::shatter_attention_impl)>("longattn::shatter_attention");
  return op.call(q, k, v, partition, options.activation, options.causal, options.key_padding_mask,
                 options.scale, options.path);
}

}  // namespace longattn
