// torch binding of kernelized (linear) attention and of Performer's random projections.
#include <ATen/Parallel.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <cmath>
#include <string>
#include <vector>

#include "kernels/kernelized_attention/kernelized_attention.h"
#include "kernels/kernelized_attention/random_features.h"
#include "longattn/kernelized_attention.h"
#include "ops/common.h"
#include "ops/kernelized_rpe.h"
#include "ops/reference/kernelized_attention.h"
#include "ops/views.h"

namespace longattn::ops {
namespace {

constexpr const char* kOp = "kernelized_attention";
constexpr const char* kKnownMaps = "'elu', 'relu', 'sikf', 'favor'";

kernels::FeatureMap parse_feature_map(const std::string& name) {
  kernels::FeatureMap f;
  if (!kernels::feature_map_from_name(name.c_str(), &f))
    fail(kOp, "unknown feature_map '" + name + "'; known: " + kKnownMaps);
  return f;
}

template <class T>
kernels::KernelizedAttentionParams<T> make_params(const at::Tensor& q, const at::Tensor& k,
                                                  const at::Tensor& v, const OptTensor& mask,
                                                  const OptTensor& projection,
                                                  int64_t feature_map, bool causal, double eps) {
  kernels::KernelizedAttentionParams<T> p;
  p.q = bhnd<const T>(q);
  p.k = bhnd<const T>(k);
  p.v = bhnd<const T>(v);
  const KeyMaskView km = key_mask_view(mask);
  p.key_padding_mask = km.data;
  p.mask_stride_b = km.stride_b;
  p.feature_map = static_cast<kernels::FeatureMap>(feature_map);
  if (given(projection)) {
    p.projection = projection->data_ptr<T>();
    p.num_features = projection->size(-2);
    p.projection_stride_h = projection->dim() == 3 ? projection->stride(0) : 0;
  }
  p.causal = causal;
  p.eps = eps;
  p.threads = at::get_num_threads();
  return p;
}

// No feature (D = 0 for elu/relu/sikf, m = 0 for favor) or no key: every weight is 0.
bool nothing_to_do(const at::Tensor& q, const at::Tensor& k, const at::Tensor& out,
                   const OptTensor& projection, int64_t feature_map) {
  const bool favor = feature_map == int64_t(kernels::FeatureMap::favor);
  const int64_t m = favor ? projection->size(-2) : q.size(3);
  return out.numel() == 0 || k.size(2) == 0 || m == 0;
}

// Inputs arrive checked, last dims contiguous, mask and projection contiguous.
std::tuple<at::Tensor, at::Tensor> forward_cpu(const at::Tensor& q, const at::Tensor& k,
                                               const at::Tensor& v, const OptTensor& mask,
                                               const OptTensor& projection,
                                               int64_t feature_map, bool causal, double eps) {
  if (is_half(q)) {  // computed in float32 (ops/common.h); the inverse denominators stay float32
    auto [out, inv] = forward_cpu(to_float32(q), to_float32(k), to_float32(v), mask, to_float32(projection),
                                  feature_map, causal, eps);
    return {as_dtype_of(out, v), inv};
  }
  const int64_t B = q.size(0), H = q.size(1), Nq = q.size(2), Dv = v.size(3);
  at::Tensor out = at::empty({B, H, Nq, Dv}, v.options());
  at::Tensor inv = at::empty({B, H, Nq}, q.options());
  if (nothing_to_do(q, k, out, projection, feature_map)) {
    out.zero_();
    inv.zero_();
    return {out, inv};
  }
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "kernelized_attention_forward", [&] {
    auto p = make_params<scalar_t>(q, k, v, mask, projection, feature_map, causal, eps);
    kernels::kernelized_attention_forward<scalar_t>(p, bhnd<scalar_t>(out),
                                                    inv.data_ptr<scalar_t>());
  });
  return {out, inv};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const at::Tensor& out, const at::Tensor& inv_denom, const OptTensor& mask,
    const OptTensor& projection, int64_t feature_map, bool causal, double eps) {
  if (is_half(q)) {  // computed in float32 (ops/common.h), returned in the inputs' dtypes
    auto [gq, gk, gv] = backward_cpu(to_float32(grad_out), to_float32(q), to_float32(k), to_float32(v),
                                     to_float32(out), inv_denom, mask, to_float32(projection), feature_map,
                                     causal, eps);
    return {as_dtype_of(gq, q), as_dtype_of(gk, k), as_dtype_of(gv, v)};
  }
  at::Tensor gq = at::empty(q.sizes(), q.options());
  at::Tensor gk = at::empty(k.sizes(), k.options());
  at::Tensor gv = at::empty(v.sizes(), v.options());
  if (nothing_to_do(q, k, out, projection, feature_map)) {
    gq.zero_();
    gk.zero_();
    gv.zero_();
    return {gq, gk, gv};
  }
  at::Tensor go = last_dim_contiguous(grad_out);
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "kernelized_attention_backward", [&] {
    auto p = make_params<scalar_t>(q, k, v, mask, projection, feature_map, causal, eps);
    kernels::KernelizedAttentionGrads<scalar_t> g;
    g.out = bhnd<const scalar_t>(out);
    g.grad_out = bhnd<const scalar_t>(go);
    g.grad_q = bhnd<scalar_t>(gq);
    g.grad_k = bhnd<scalar_t>(gk);
    g.grad_v = bhnd<scalar_t>(gv);
    g.inv_denom = inv_denom.data_ptr<scalar_t>();
    kernels::kernelized_attention_backward<scalar_t>(p, g);
  });
  return {gq, gk, gv};
}

// Meta kernels: the outputs' shapes and dtypes (sizes may be symbols under torch.compile).
std::tuple<at::Tensor, at::Tensor> forward_meta(const at::Tensor& q, const at::Tensor& /*k*/,
                                                const at::Tensor& v, const OptTensor& /*mask*/,
                                                const OptTensor& /*projection*/, int64_t /*feature_map*/,
                                                bool /*causal*/, double /*eps*/) {
  return {empty_like_sizes(v, {q.sym_size(0), q.sym_size(1), q.sym_size(2), v.sym_size(3)}),
          at::empty_symint({q.sym_size(0), q.sym_size(1), q.sym_size(2)}, q.options().dtype(stat_dtype(q)))};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_meta(
    const at::Tensor& /*grad_out*/, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const at::Tensor& /*out*/, const at::Tensor& /*inv_denom*/, const OptTensor& /*mask*/,
    const OptTensor& /*projection*/, int64_t /*feature_map*/, bool /*causal*/, double /*eps*/) {
  return {empty_like_sizes(q, q.sym_sizes()), empty_like_sizes(k, k.sym_sizes()),
          empty_like_sizes(v, v.sym_sizes())};
}

class KernelizedAttentionFunction
    : public torch::autograd::Function<KernelizedAttentionFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& q,
                            const at::Tensor& k, const at::Tensor& v, const OptTensor& mask,
                            const OptTensor& projection, int64_t feature_map, bool causal,
                            double eps, bool reference) {
    static auto op = op_handle<decltype(forward_cpu)>("longattn::_kernelized_attention_forward");
    // The reference path on CPU is called directly (the dispatcher would pick the CPU kernel);
    // on other devices the dispatcher's CompositeExplicitAutograd kernel is the same function.
    auto [out, inv] = calls_reference_directly(reference, q)
                          ? reference::kernelized_attention_forward(q, k, v, mask, projection, feature_map, causal, eps)
                          : op.call(q, k, v, mask, projection, feature_map, causal, eps);
    ctx->save_for_backward({q, k, v, out, inv, saved(mask), saved(projection)});
    ctx->saved_data["reference"] = reference;
    ctx->saved_data["feature_map"] = feature_map;
    ctx->saved_data["causal"] = causal;
    ctx->saved_data["eps"] = eps;
    return out;
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grads) {
    static auto op = op_handle<decltype(backward_cpu)>("longattn::_kernelized_attention_backward");
    auto s = ctx->get_saved_variables();
    const bool reference = calls_reference_directly(ctx->saved_data["reference"].toBool(), s[0]);
    const int64_t fm = ctx->saved_data["feature_map"].toInt();
    const bool causal = ctx->saved_data["causal"].toBool();
    const double eps = ctx->saved_data["eps"].toDouble();
    auto [gq, gk, gv] =
        reference ? reference::kernelized_attention_backward(grads[0], s[0], s[1], s[2], s[3], s[4], unsaved(s[5]),
                                                             unsaved(s[6]), fm, causal, eps)
                  : op.call(grads[0], s[0], s[1], s[2], s[3], s[4], unsaved(s[5]), unsaved(s[6]), fm, causal, eps);
    // The projection is a constant (Performer redraws it, it is not learned).
    return {gq, gk, gv, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

void check_projection(const at::Tensor& q, const OptTensor& projection,
                      const std::string& feature_map) {
  const bool has = given(projection);
  if (feature_map != "favor") {
    if (has)
      fail(kOp, "projection is used only by feature_map='favor', got feature_map='" +
                    feature_map + "' with a projection of shape " + shape_str(projection->sym_sizes()));
    return;
  }
  const c10::SymInt H = q.sym_size(1), D = q.sym_size(3);
  if (!has)
    fail(kOp, "feature_map='favor' needs projection [m, D] or [H, m, D] with D = " + str(D) +
                  " (see longattn.random_features)");
  const at::Tensor& w = *projection;
  check_param_dtype_device(kOp, "q", q, "projection", w);
  if (w.dim() == 2) {
    check_shape(kOp, "projection", w, {-1, D}, "[m, D]");
  } else if (w.dim() == 3) {
    check_shape(kOp, "projection", w, {H, -1, D}, "[H, m, D]");
  } else {
    fail(kOp, "projection must have shape [m, D] or [H, m, D] with H = " + str(H) + ", D = " +
                  str(D) + ", got " + shape_str(w.sym_sizes()));
  }
}

// ------------------------------------------------------------------ the feature maps as an op
// feature_map(x, map, projection, mask) -> (phi, shift): the kernels' feature_map_forward on
// every row of x [B, H, N, D]: phi [B, H, N, m] = phi(x) e^{-shift} (the row's own maximum
// exponent for sikf / favor, shift = 0 for elu / relu). Masked rows ([B, N] False) are never
// read: phi = 0, shift = 0 and zero gradient, whatever x holds. Differentiable in x through
// feature_map_backward (shift included: c = max u is a function of x).

int64_t feature_dim(const at::Tensor& x, const OptTensor& projection) {
  return projection && projection->defined() ? projection->size(-2) : x.size(3);
}

template <class T>
kernels::FeatureMapSpec<T> spec_for(kernels::FeatureMap f, const at::Tensor& x,
                                    const OptTensor& projection, int64_t h) {
  kernels::FeatureMapSpec<T> s;
  s.kind = f;
  s.D = x.size(3);
  s.m = feature_dim(x, projection);
  if (projection && projection->defined())
    s.omega = projection->data_ptr<T>() + (projection->dim() == 3 ? h * projection->stride(0) : 0);
  return s;
}

bool row_masked(const OptTensor& mask, int64_t b, int64_t j) {
  return mask && mask->defined() && !mask->data_ptr<bool>()[b * mask->stride(0) + j];
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> feature_map_forward_cpu(
    const at::Tensor& x, c10::string_view feature_map, const OptTensor& projection,
    const OptTensor& mask) {
  if (is_half(x)) {  // computed in float32 (ops/common.h); phi in x's dtype, the shift float32
    auto [phi, shift, argmax] = feature_map_forward_cpu(to_float32(x), feature_map, to_float32(projection), mask);
    return {as_dtype_of(phi, x), shift, argmax};
  }
  const auto f = parse_feature_map(std::string(feature_map));
  const int64_t B = x.size(0), H = x.size(1), N = x.size(2), m = feature_dim(x, projection);
  at::Tensor phi = at::zeros({B, H, N, m}, x.options());
  at::Tensor shift = at::zeros({B, H, N}, x.options());
  at::Tensor argmax = at::zeros({B, H, N}, x.options().dtype(at::kInt));
  if (phi.numel() == 0) return {phi, shift, argmax};
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "feature_map_forward", [&] {
    at::parallel_for(0, B * H, 1, [&](int64_t lo, int64_t hi) {
      for (int64_t bh = lo; bh < hi; ++bh) {
        const int64_t b = bh / H, h = bh % H;
        auto s = spec_for<scalar_t>(f, x, projection, h);
        scalar_t* ph = phi.data_ptr<scalar_t>() + bh * N * m;
        scalar_t* sh = shift.data_ptr<scalar_t>() + bh * N;
        int32_t* am = argmax.data_ptr<int32_t>() + bh * N;
        kernels::feature_map_forward(s, x.data_ptr<scalar_t>() + b * x.stride(0) + h * x.stride(1), x.stride(2), N, ph, m,
                                     kernels::feature_map_is_exponential(f) ? sh : nullptr,
                                     kernels::feature_map_is_exponential(f) ? am : nullptr);
        for (int64_t j = 0; j < N; ++j)
          if (row_masked(mask, b, j)) {
            std::fill(ph + j * m, ph + (j + 1) * m, scalar_t(0));
            sh[j] = 0;
            am[j] = 0;
          }
      }
    });
  });
  return {phi, shift, argmax};
}

at::Tensor feature_map_backward_cpu(const at::Tensor& grad_phi, const at::Tensor& grad_shift,
                                    const at::Tensor& x, const at::Tensor& phi,
                                    const at::Tensor& argmax, c10::string_view feature_map,
                                    const OptTensor& projection, const OptTensor& mask) {
  if (is_half(x))  // computed in float32 (ops/common.h), returned in x's dtype
    return as_dtype_of(feature_map_backward_cpu(to_float32(grad_phi), to_float32(grad_shift), to_float32(x),
                                                to_float32(phi), argmax, feature_map, to_float32(projection), mask),
                       x);
  const auto f = parse_feature_map(std::string(feature_map));
  const int64_t B = x.size(0), H = x.size(1), N = x.size(2), D = x.size(3), m = phi.size(3);
  at::Tensor gx = at::zeros({B, H, N, D}, x.options());
  if (gx.numel() == 0 || m == 0) return gx;
  at::Tensor gphi = grad_phi.contiguous().clone();  // overwritten by the kernel
  at::Tensor gshift = grad_shift.contiguous();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "feature_map_backward", [&] {
    at::parallel_for(0, B * H, 1, [&](int64_t lo, int64_t hi) {
      for (int64_t bh = lo; bh < hi; ++bh) {
        const int64_t b = bh / H, h = bh % H;
        auto s = spec_for<scalar_t>(f, x, projection, h);
        scalar_t* g = gx.data_ptr<scalar_t>() + bh * N * D;
        kernels::feature_map_backward(s, x.data_ptr<scalar_t>() + b * x.stride(0) + h * x.stride(1), x.stride(2), N,
                                      phi.data_ptr<scalar_t>() + bh * N * m, m,
                                      argmax.data_ptr<int32_t>() + bh * N,
                                      gphi.data_ptr<scalar_t>() + bh * N * m, m,
                                      gshift.data_ptr<scalar_t>() + bh * N, g, D);
        for (int64_t j = 0; j < N; ++j)
          if (row_masked(mask, b, j)) std::fill(g + j * D, g + (j + 1) * D, scalar_t(0));
      }
    });
  });
  return gx;
}

// Meta kernels of the feature map: phi [B, H, N, m] (m = the projection's rows for favor, else D),
// its per-row shift and argmax [B, H, N]; the input gradient like x.
std::tuple<at::Tensor, at::Tensor, at::Tensor> feature_map_forward_meta(
    const at::Tensor& x, c10::string_view /*feature_map*/, const OptTensor& projection,
    const OptTensor& /*mask*/) {
  const c10::SymInt m = projection && projection->defined() ? projection->sym_size(-2) : x.sym_size(3);
  const c10::SymInt B = x.sym_size(0), H = x.sym_size(1), N = x.sym_size(2);
  return {empty_like_sizes(x, {B, H, N, m}), at::empty_symint({B, H, N}, x.options().dtype(stat_dtype(x))),
          at::empty_symint({B, H, N}, x.options().dtype(at::kInt))};
}

at::Tensor feature_map_backward_meta(const at::Tensor& /*grad_phi*/, const at::Tensor& /*grad_shift*/,
                                     const at::Tensor& x, const at::Tensor& /*phi*/,
                                     const at::Tensor& /*argmax*/, c10::string_view /*feature_map*/,
                                     const OptTensor& /*projection*/, const OptTensor& /*mask*/) {
  return empty_like_sizes(x, x.sym_sizes());
}

class FeatureMapFunction : public torch::autograd::Function<FeatureMapFunction> {
 public:
  static torch::autograd::tensor_list forward(torch::autograd::AutogradContext* ctx,
                                              const at::Tensor& x, const std::string& feature_map,
                                              const OptTensor& projection, const OptTensor& mask,
                                              bool reference) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("longattn::_feature_map_forward", "")
                         .typed<decltype(feature_map_forward_cpu)>();
    auto [phi, shift, argmax] = calls_reference_directly(reference, x)
                                    ? reference::feature_map_forward(x, feature_map, projection, mask)
                                    : op.call(x, feature_map, projection, mask);
    ctx->save_for_backward({x, phi, argmax, projection ? *projection : at::Tensor(),
                            mask ? *mask : at::Tensor()});
    ctx->saved_data["feature_map"] = feature_map;
    ctx->saved_data["reference"] = reference;
    return {phi, shift};
  }
  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grads) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("longattn::_feature_map_backward", "")
                         .typed<decltype(feature_map_backward_cpu)>();
    auto s = ctx->get_saved_variables();
    auto opt = [](const at::Tensor& t) { return t.defined() ? OptTensor(t) : c10::nullopt; };
    at::Tensor gphi = grads[0].defined() ? grads[0] : at::zeros_like(s[1]);
    at::Tensor gshift = grads[1].defined() ? grads[1] : at::zeros(s[2].sizes(), s[1].options().dtype(stat_dtype(s[1])));
    // feature_map_backward wants the TOTAL derivative with respect to the shift c, and phi =
    // phi(x) e^{-c} depends on c too (d phi / d c = -phi).
    gshift = gshift - (gphi * s[1]).sum(-1);
    const std::string& fm = ctx->saved_data["feature_map"].toStringRef();
    at::Tensor gx = calls_reference_directly(ctx->saved_data["reference"].toBool(), s[0])
                        ? reference::feature_map_backward(gphi, gshift, s[0], s[1], s[2], fm, opt(s[3]), opt(s[4]))
                        : op.call(gphi, gshift, s[0], s[1], s[2], fm, opt(s[3]), opt(s[4]));
    return {gx, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

std::tuple<at::Tensor, at::Tensor> feature_map_impl(const at::Tensor& x,
                                                    c10::string_view feature_map_view,
                                                    const OptTensor& projection,
                                                    const OptTensor& key_padding_mask,
                                                    c10::string_view path) {
  const char* op = "feature_map";
  const std::string feature_map(feature_map_view);
  parse_feature_map(feature_map);
  check_rank(op, "x", x, 4, "[B, H, N, D]");
  check_float_dtype(op, "x", x);
  const bool reference = takes_reference_path(op, path, x);
  check_projection(x, projection, feature_map);
  OptTensor mask, proj;
  if (key_padding_mask && key_padding_mask->defined()) {
    check_key_padding_mask(op, *key_padding_mask, x.size(0), x.size(2));
    mask = key_padding_mask->contiguous();
  }
  if (projection && projection->defined()) proj = projection->detach().contiguous();
  auto r = FeatureMapFunction::apply(last_dim_contiguous(x), feature_map, proj, mask, reference);
  return {r[0], r[1]};
}

// rel_bias (Luo et al. 2021): the kernels' feature maps (feature_map above), then the Toeplitz
// products on the features (ops/kernelized_rpe.cpp). The same stabilised features and the same
// eps as the kernel without rel_bias (kernelized_attention.h): queries phi(q_i) e^{-c_i}, keys
// phi(k_j) e^{-R_i} with R_i the largest key exponent for row i (over all keys that take part;
// causal: over j <= i). The keys go in with their own shifts c_j as log-scales l_j, so keys of
// any range keep their precision, and R_i becomes eps's log-scale mu_i: the denominator
// sum_j e^{b} phi(q_i)e^{-c_i}.phi(k_j)e^{-R_i} + eps is e^{-R_i} (sum_j ... phi(k_j) + eps e^{R_i}).
// Autograd differentiates this exactly, the paths through the maxima included.
at::Tensor rel_bias_path(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                         const std::string& feature_map, bool causal, const OptTensor& mask,
                         const OptTensor& proj, const at::Tensor& rel_bias, double eps, bool reference) {
  const at::Tensor fq =
      FeatureMapFunction::apply(last_dim_contiguous(q), feature_map, proj, c10::nullopt, reference)[0];
  auto rk = FeatureMapFunction::apply(last_dim_contiguous(k), feature_map, proj, mask, reference);
  const at::Tensor &fk = rk[0], &ck = rk[1];
  if (!kernels::feature_map_is_exponential(parse_feature_map(feature_map)) || k.size(2) == 0)
    return kernelized_rpe_from_features(fq, fk, v, rel_bias, causal, mask, eps, {}, {}, reference);
  at::Tensor ck_on = mask ? at::where(mask->unsqueeze(1), ck, -INFINITY) : ck;
  at::Tensor R = causal ? std::get<0>(ck_on.cummax(2)) : ck_on.amax(2, true).expand_as(ck);
  // Rows with no key: R = -inf; they output zeros whatever mu is, and -inf would give NaN
  // gradients, so 0 stands in.
  R = at::where(R == -INFINITY, at::zeros_like(R), R);
  return kernelized_rpe_from_features(fq, fk, v, rel_bias, causal, mask, eps, ck, R, reference);
}

at::Tensor kernelized_attention_impl(const at::Tensor& q, const at::Tensor& k,
                                     const at::Tensor& v, c10::string_view feature_map_view,
                                     bool causal, const OptTensor& key_padding_mask,
                                     const OptTensor& projection, double eps,
                                     const OptTensor& rel_bias, c10::string_view path) {
  const std::string feature_map(feature_map_view);
  const int64_t fm = static_cast<int64_t>(parse_feature_map(feature_map));
  const QkvSizes n = check_qkv(kOp, q, k, v);
  const bool reference = takes_reference_path(kOp, path, q);
  if (causal) check_square(kOp, "causal=True", n.Nq, n.Nk);
  if (!(eps >= 0) || !std::isfinite(eps))
    fail(kOp, "eps must be finite and >= 0, got " + std::to_string(eps));
  check_projection(q, projection, feature_map);
  const OptTensor mask = checked_key_mask(kOp, key_padding_mask, n.B, n.Nk);
  OptTensor proj;
  if (given(projection)) proj = projection->detach().contiguous();
  if (given(rel_bias)) {
    check_square(kOp, "rel_bias", n.Nq, n.Nk);
    check_param_dtype_device(kOp, "q", q, "rel_bias", *rel_bias);
    check_rank(kOp, "rel_bias", *rel_bias, 2, "[H, 2N-1]");
    check_shape(kOp, "rel_bias", *rel_bias, {n.H, offsets_len(n.Nq)}, "[H, 2N-1]");
    return rel_bias_path(q, k, v, feature_map, causal, mask, proj, *rel_bias, eps, reference);
  }
  if (n.D == 0 && feature_map == "favor" && proj->sym_size(-2) > 0 && q.sym_numel() == 0 &&
      n.B * n.H * n.Nq > 0) {
    // No input feature: u = 0 and every key weighs the same. The kernels want D >= 1; one
    // zero feature (still attached to q and k, for their empty gradients) is the same map.
    const std::vector<c10::SymInt> shape =
        proj->dim() == 3 ? std::vector<c10::SymInt>{n.H, proj->sym_size(1), 1}
                         : std::vector<c10::SymInt>{proj->sym_size(0), 1};
    auto one = proj->new_zeros_symint(shape);
    return kernelized_attention_impl(q.sum(-1, true) * 0, k.sum(-1, true) * 0, v, feature_map,
                                     causal, key_padding_mask, one, eps, rel_bias, path);
  }
  return KernelizedAttentionFunction::apply(last_dim_contiguous(q), last_dim_contiguous(k),
                                            last_dim_contiguous(v), mask, proj, fm, causal,
                                            eps, reference);
}

// The checked arguments of random_features: the output's sizes and dtype, and the scaling.
struct RandomFeaturesOutput {
  std::vector<int64_t> sizes;
  at::ScalarType dtype;
  kernels::RandomFeatureScaling scaling;
};

RandomFeaturesOutput check_random_features(int64_t m, int64_t d, c10::string_view scaling_view,
                                           c10::optional<int64_t> heads,
                                           c10::optional<at::ScalarType> dtype) {
  const char* op = "random_features";
  const std::string scaling(scaling_view);
  if (m < 0 || d < 1)
    fail(op, "needs m >= 0 and d >= 1, got m = " + std::to_string(m) + ", d = " +
                 std::to_string(d));
  if (heads && *heads < 1) fail(op, "heads must be >= 1, got " + std::to_string(*heads));
  kernels::RandomFeatureScaling sc;
  if (scaling == "chi") sc = kernels::RandomFeatureScaling::chi;
  else if (scaling == "sqrt_d") sc = kernels::RandomFeatureScaling::sqrt_d;
  else fail(op, "unknown scaling '" + scaling + "'; known: 'chi', 'sqrt_d'");
  const at::ScalarType st = dtype.value_or(at::kFloat);
  if (st != at::kFloat && st != at::kDouble && st != at::kBFloat16 && st != at::kHalf)
    fail(op, std::string("dtype must be float32, float64, bfloat16 or float16, got ") + c10::toString(st));
  return {heads ? std::vector<int64_t>{*heads, m, d} : std::vector<int64_t>{m, d}, st, sc};
}

at::Tensor random_features_impl(int64_t m, int64_t d, int64_t seed, bool orthogonal,
                                c10::string_view scaling, c10::optional<int64_t> heads,
                                c10::optional<at::ScalarType> dtype, c10::optional<at::Device> device) {
  // Drawn on the CPU whatever the device, by the one generator (kernels/.../random_features.h),
  // then moved: the same seed gives the same bits on every device.
  if (device && !device->is_cpu())
    return random_features_impl(m, d, seed, orthogonal, scaling, heads, dtype, c10::nullopt).to(*device);
  const RandomFeaturesOutput o = check_random_features(m, d, scaling, heads, dtype);
  // Half precision: the float32 features rounded (the same draws as for float32).
  if (o.dtype == at::kBFloat16 || o.dtype == at::kHalf)
    return random_features_impl(m, d, seed, orthogonal, scaling, heads, at::kFloat, c10::nullopt).to(o.dtype);
  at::Tensor w = at::empty(o.sizes, at::TensorOptions().dtype(o.dtype));
  AT_DISPATCH_FLOATING_TYPES(o.dtype, "random_features", [&] {
    kernels::random_features<scalar_t>(m, d, static_cast<uint64_t>(seed), orthogonal, o.scaling,
                                       heads.value_or(1), w.data_ptr<scalar_t>());
  });
  return w;
}

// No tensor input, so FakeTensor reaches this through the Meta key it sets while tracing.
at::Tensor random_features_meta(int64_t m, int64_t d, int64_t /*seed*/, bool /*orthogonal*/,
                                c10::string_view scaling, c10::optional<int64_t> heads,
                                c10::optional<at::ScalarType> dtype, c10::optional<at::Device> /*device*/) {
  const RandomFeaturesOutput o = check_random_features(m, d, scaling, heads, dtype);
  return at::empty(o.sizes, at::TensorOptions().dtype(o.dtype).device(at::kMeta));
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(longattn, m) {
  m.def(
      "kernelized_attention(Tensor q, Tensor k, Tensor v, *, str feature_map, bool causal=False, "
      "Tensor? key_padding_mask=None, Tensor? projection=None, float eps=1e-6, "
      "Tensor? rel_bias=None, str path='fused') -> Tensor");
  m.def(
      "_kernelized_attention_forward(Tensor q, Tensor k, Tensor v, Tensor? key_padding_mask, "
      "Tensor? projection, int feature_map, bool causal, float eps) -> (Tensor, Tensor)");
  m.def(
      "_kernelized_attention_backward(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor out, "
      "Tensor inv_denom, Tensor? key_padding_mask, Tensor? projection, int feature_map, "
      "bool causal, float eps) -> (Tensor, Tensor, Tensor)");
  m.def(
      "feature_map(Tensor x, *, str feature_map, Tensor? projection=None, "
      "Tensor? key_padding_mask=None, str path='fused') -> (Tensor, Tensor)");
  m.def(
      "_feature_map_forward(Tensor x, str feature_map, Tensor? projection, Tensor? mask) "
      "-> (Tensor, Tensor, Tensor)");
  m.def(
      "_feature_map_backward(Tensor grad_phi, Tensor grad_shift, Tensor x, Tensor phi, "
      "Tensor argmax, str feature_map, Tensor? projection, Tensor? mask) -> Tensor");
  m.def(
      "random_features(int m, int d, *, int seed, bool orthogonal=True, str scaling='chi', "
      "int? heads=None, ScalarType? dtype=None, Device? device=None) -> Tensor");
}

TORCH_LIBRARY_IMPL(longattn, CPU, m) {
  m.impl("_kernelized_attention_forward", forward_cpu);
  m.impl("_kernelized_attention_backward", backward_cpu);
  m.impl("_feature_map_forward", feature_map_forward_cpu);
  m.impl("_feature_map_backward", feature_map_backward_cpu);
}

TORCH_LIBRARY_IMPL(longattn, Meta, m) {
  m.impl("_kernelized_attention_forward", forward_meta);
  m.impl("_kernelized_attention_backward", backward_meta);
  m.impl("random_features", random_features_meta);
  m.impl("_feature_map_forward", feature_map_forward_meta);
  m.impl("_feature_map_backward", feature_map_backward_meta);
}

// No tensor input to dispatch on: CompositeExplicitAutograd also serves calls without a key.
TORCH_LIBRARY_IMPL(longattn, CompositeExplicitAutograd, m) {
  m.impl("random_features", random_features_impl);
  // The reference path (ops/reference/kernelized_attention.cpp): every device without a fused
  // kernel (CUDA, XPU, MPS, ...) reaches it; CPU keeps its CPU kernels, Meta its Meta kernels.
  m.impl("_kernelized_attention_forward", reference::kernelized_attention_forward);
  m.impl("_kernelized_attention_backward", reference::kernelized_attention_backward);
  m.impl("_feature_map_forward", reference::feature_map_forward);
  m.impl("_feature_map_backward", reference::feature_map_backward);
}

TORCH_LIBRARY_IMPL(longattn, CompositeImplicitAutograd, m) {
  m.impl("kernelized_attention", kernelized_attention_impl);
  m.impl("feature_map", feature_map_impl);
}

}  // namespace longattn::ops

namespace longattn {

at::Tensor kernelized_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                const std::string& feature_map,
                                const KernelizedAttentionOptions& options) {
  static auto op =
      ops::op_handle<decltype(ops::kernelized_attention_impl)>("longattn::kernelized_attention");
  return op.call(q, k, v, feature_map, options.causal, options.key_padding_mask,
                 options.projection, options.eps, options.rel_bias, options.path);
}

at::Tensor random_features(int64_t m, int64_t d, int64_t seed,
                           const RandomFeaturesOptions& options) {
  static auto op = ops::op_handle<decltype(ops::random_features_impl)>("longattn::random_features");
  return op.call(m, d, seed, options.orthogonal, options.scaling, options.heads, options.dtype,
                 options.device);
}

}  // namespace longattn
