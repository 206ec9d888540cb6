// torch binding of the YOSO kernels: yoso_attention (LSH, linear) and yoso_expectation (YOSO-E).
#include <ATen/Parallel.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include "kernels/yoso/yoso.h"
#include "longattn/yoso.h"
#include "ops/common.h"
#include "ops/masked_rows.h"
#include "ops/reference/yoso.h"
#include "ops/views.h"

namespace longattn::ops {
namespace {

constexpr const char* kOp = "yoso_attention";
constexpr const char* kOpE = "yoso_expectation";

// The key mask also masks queries in self-attention (Nq == Nk), as the authors' layer does.
template <class T>
kernels::YosoParams<T> make_params(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                   const OptTensor& mask, int64_t hash_bits, int64_t num_hashes,
                                   int64_t seed, int64_t hashing) {
  kernels::YosoParams<T> p;
  p.q = bhnd<const T>(q);
  p.k = bhnd<const T>(k);
  p.v = bhnd<const T>(v);
  const KeyMaskView km = key_mask_view(mask);
  p.key_padding_mask = km.data;
  p.key_mask_stride_b = km.stride_b;
  if (km.data) {
    if (q.size(2) == k.size(2)) {
      p.query_padding_mask = p.key_padding_mask;
      p.query_mask_stride_b = p.key_mask_stride_b;
    }
  }
  p.hash_bits = int(hash_bits);
  p.num_hashes = int(num_hashes);
  p.seed = static_cast<uint64_t>(seed);
  p.hashing = static_cast<kernels::YosoHashing>(hashing);
  p.threads = at::get_num_threads();
  return p;
}

bool empty_problem(const at::Tensor& q, const at::Tensor& k) {
  return q.numel() == 0 || k.size(2) == 0;
}

// Nothing to compute: no query, no key or no value feature (Dv = 0: the kernels' chunking of the
// value width would divide by it). Outputs and gradients are then all zero.
bool nothing_flows(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  return empty_problem(q, k) || v.size(3) == 0;
}

// Codes [B, H, m, Nq] and [B, H, m, Nk] (int32, −1 for masked rows).
std::tuple<at::Tensor, at::Tensor> hash_cpu(const at::Tensor& q, const at::Tensor& k,
                                            const OptTensor& mask, int64_t hash_bits,
                                            int64_t num_hashes, int64_t seed, int64_t hashing) {
  // Half precision hashes its float32 values (ops/common.h): the same codes as float32 inputs.
  if (is_half(q)) return hash_cpu(to_float32(q), to_float32(k), mask, hash_bits, num_hashes, seed, hashing);
  const int64_t B = q.size(0), H = q.size(1);
  auto opts = q.options().dtype(at::kInt);
  at::Tensor qc = at::empty({B, H, num_hashes, q.size(2)}, opts);
  at::Tensor kc = at::empty({B, H, num_hashes, k.size(2)}, opts);
  if (empty_problem(q, k)) {
    qc.fill_(-1), kc.fill_(-1);
    return {qc, kc};
  }
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "yoso_hash", [&] {
    auto p = make_params<scalar_t>(q, k, k, mask, hash_bits, num_hashes, seed, hashing);
    kernels::yoso_hash<scalar_t>(p, qc.data_ptr<int32_t>(), kc.data_ptr<int32_t>());
  });
  return {qc, kc};
}

at::Tensor forward_cpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                       const at::Tensor& q_codes, const at::Tensor& k_codes, int64_t hash_bits) {
  if (is_half(q))  // computed in float32 (ops/common.h)
    return as_dtype_of(forward_cpu(to_float32(q), to_float32(k), to_float32(v), q_codes, k_codes, hash_bits), v);
  at::Tensor out = at::empty({q.size(0), q.size(1), q.size(2), v.size(3)}, v.options());
  if (nothing_flows(q, k, v)) return out.zero_();
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "yoso_forward", [&] {
    auto p = make_params<scalar_t>(q, k, v, c10::nullopt, hash_bits, q_codes.size(2), 0, 0);
    kernels::yoso_forward<scalar_t>(p, q_codes.data_ptr<int32_t>(), k_codes.data_ptr<int32_t>(),
                                    bhnd<scalar_t>(out));
  });
  return out;
}

using Grads3 = std::tuple<at::Tensor, at::Tensor, at::Tensor>;

// Runs f(zero of the dtype, grads, q, k, v) on freshly allocated gradients (zeros for an empty
// problem); f takes q, k, v from here, as half-precision inputs reach it in float32.
template <class F>
Grads3 with_grads(const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k,
                  const at::Tensor& v, F f) {
  if (is_half(q)) {  // computed in float32 (ops/common.h), returned in the inputs' dtypes
    auto [gq, gk, gv] = with_grads(to_float32(grad_out), to_float32(q), to_float32(k), to_float32(v), f);
    return {as_dtype_of(gq, q), as_dtype_of(gk, k), as_dtype_of(gv, v)};
  }
  at::Tensor gq = at::empty(q.sizes(), q.options());
  at::Tensor gk = at::empty(k.sizes(), k.options());
  at::Tensor gv = at::empty(v.sizes(), v.options());
  if (nothing_flows(q, k, v)) {
    gq.zero_(), gk.zero_(), gv.zero_();
    return {gq, gk, gv};
  }
  at::Tensor go = last_dim_contiguous(grad_out);
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "yoso_backward", [&] {
    kernels::YosoGrads<scalar_t> g;
    g.grad_out = bhnd<const scalar_t>(go);
    g.grad_q = bhnd<scalar_t>(gq);
    g.grad_k = bhnd<scalar_t>(gk);
    g.grad_v = bhnd<scalar_t>(gv);
    f(scalar_t(0), g, q, k, v);
  });
  return {gq, gk, gv};
}

Grads3 backward_lsh_cpu(const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k,
                        const at::Tensor& v, const at::Tensor& q_codes, const at::Tensor& k_codes,
                        int64_t hash_bits) {
  return with_grads(grad_out, q, k, v, [&](auto zero, const auto& g, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
    using T = decltype(zero);
    auto p = make_params<T>(q, k, v, c10::nullopt, hash_bits, q_codes.size(2), 0, 0);
    kernels::yoso_backward_lsh<T>(p, q_codes.data_ptr<int32_t>(), k_codes.data_ptr<int32_t>(), g);
  });
}

at::Tensor expectation_forward_cpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                   const OptTensor& mask, int64_t hash_bits) {
  if (is_half(q))  // computed in float32 (ops/common.h)
    return as_dtype_of(expectation_forward_cpu(to_float32(q), to_float32(k), to_float32(v), mask, hash_bits), v);
  at::Tensor out = at::empty({q.size(0), q.size(1), q.size(2), v.size(3)}, v.options());
  if (nothing_flows(q, k, v)) return out.zero_();
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "yoso_expectation_forward", [&] {
    auto p = make_params<scalar_t>(q, k, v, mask, hash_bits, 1, 0, 0);
    kernels::yoso_expectation_forward<scalar_t>(p, bhnd<scalar_t>(out));
  });
  return out;
}

// derivative: 0 = exact, 1 = surrogate (kernels::YosoDerivative).
Grads3 expectation_backward_cpu(const at::Tensor& grad_out, const at::Tensor& q,
                                const at::Tensor& k, const at::Tensor& v, const OptTensor& mask,
                                int64_t hash_bits, int64_t derivative) {
  return with_grads(grad_out, q, k, v, [&](auto zero, const auto& g, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
    using T = decltype(zero);
    auto p = make_params<T>(q, k, v, mask, hash_bits, 1, 0, 0);
    kernels::yoso_expectation_backward<T>(p, g, static_cast<kernels::YosoDerivative>(derivative));
  });
}

// Meta kernels: the outputs' shapes and dtypes (sizes may be symbols under torch.compile).
std::tuple<at::Tensor, at::Tensor> hash_meta(const at::Tensor& q, const at::Tensor& k,
                                             const OptTensor& /*mask*/, int64_t /*hash_bits*/,
                                             int64_t num_hashes, int64_t /*seed*/, int64_t /*hashing*/) {
  auto codes = q.options().dtype(at::kInt);
  return {at::empty_symint({q.sym_size(0), q.sym_size(1), num_hashes, q.sym_size(2)}, codes),
          at::empty_symint({k.sym_size(0), k.sym_size(1), num_hashes, k.sym_size(2)}, codes)};
}

at::Tensor out_meta(const at::Tensor& q, const at::Tensor& v) {
  return empty_like_sizes(v, {q.sym_size(0), q.sym_size(1), q.sym_size(2), v.sym_size(3)});
}

at::Tensor forward_meta(const at::Tensor& q, const at::Tensor& /*k*/, const at::Tensor& v,
                        const at::Tensor& /*q_codes*/, const at::Tensor& /*k_codes*/, int64_t /*hash_bits*/) {
  return out_meta(q, v);
}

at::Tensor expectation_forward_meta(const at::Tensor& q, const at::Tensor& /*k*/, const at::Tensor& v,
                                    const OptTensor& /*mask*/, int64_t /*hash_bits*/) {
  return out_meta(q, v);
}

Grads3 grads_meta(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  return {empty_like_sizes(q, q.sym_sizes()), empty_like_sizes(k, k.sym_sizes()),
          empty_like_sizes(v, v.sym_sizes())};
}

Grads3 backward_lsh_meta(const at::Tensor& /*grad_out*/, const at::Tensor& q, const at::Tensor& k,
                         const at::Tensor& v, const at::Tensor& /*q_codes*/, const at::Tensor& /*k_codes*/,
                         int64_t /*hash_bits*/) {
  return grads_meta(q, k, v);
}

Grads3 expectation_backward_meta(const at::Tensor& /*grad_out*/, const at::Tensor& q,
                                 const at::Tensor& k, const at::Tensor& v, const OptTensor& /*mask*/,
                                 int64_t /*hash_bits*/, int64_t /*derivative*/) {
  return grads_meta(q, k, v);
}

class YosoAttentionFunction : public torch::autograd::Function<YosoAttentionFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& q,
                            const at::Tensor& k, const at::Tensor& v, const OptTensor& mask,
                            int64_t hash_bits, int64_t num_hashes, int64_t seed, int64_t hashing,
                            bool lsh_backward, bool reference) {
    static auto hash = op_handle<decltype(hash_cpu)>("longattn::_yoso_hash");
    static auto fwd = op_handle<decltype(forward_cpu)>("longattn::_yoso_forward");
    auto [qc, kc] = reference ? reference::yoso_hash(q, k, mask, hash_bits, num_hashes, seed, hashing)
                              : hash.call(q, k, mask, hash_bits, num_hashes, seed, hashing);
    at::Tensor out = reference ? reference::yoso_forward(q, k, v, qc, kc, hash_bits)
                               : fwd.call(q, k, v, qc, kc, hash_bits);
    // The codes are kept for the LSH backward only (the exact one does not need them).
    ctx->save_for_backward({q, k, v, lsh_backward ? qc : at::Tensor(),
                            lsh_backward ? kc : at::Tensor(), saved(mask)});
    ctx->saved_data["hash_bits"] = hash_bits;
    ctx->saved_data["lsh"] = lsh_backward;
    ctx->saved_data["reference"] = reference;
    return out;
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grads) {
    static auto lsh = op_handle<decltype(backward_lsh_cpu)>("longattn::_yoso_backward_lsh");
    static auto exact =
        op_handle<decltype(expectation_backward_cpu)>("longattn::_yoso_expectation_backward");
    auto s = ctx->get_saved_variables();
    const int64_t tau = ctx->saved_data["hash_bits"].toInt();
    const OptTensor mask = unsaved(s[5]);
    const bool lsh_backward = ctx->saved_data["lsh"].toBool();
    const int64_t surrogate = int64_t(kernels::YosoDerivative::surrogate);
    auto [gq, gk, gv] =
        ctx->saved_data["reference"].toBool()
            ? (lsh_backward ? reference::yoso_backward_lsh(grads[0], s[0], s[1], s[2], s[3], s[4], tau)
                            : reference::yoso_expectation_backward(grads[0], s[0], s[1], s[2], mask, tau, surrogate))
        : lsh_backward ? lsh.call(grads[0], s[0], s[1], s[2], s[3], s[4], tau)
                       : exact.call(grads[0], s[0], s[1], s[2], mask, tau, surrogate);
    return {gq, gk, gv, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(),
            at::Tensor(), at::Tensor()};
  }
};

class YosoExpectationFunction : public torch::autograd::Function<YosoExpectationFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& q,
                            const at::Tensor& k, const at::Tensor& v, const OptTensor& mask,
                            int64_t hash_bits, int64_t derivative, bool reference) {
    static auto fwd =
        op_handle<decltype(expectation_forward_cpu)>("longattn::_yoso_expectation_forward");
    ctx->save_for_backward({q, k, v, saved(mask)});
    ctx->saved_data["hash_bits"] = hash_bits;
    ctx->saved_data["derivative"] = derivative;
    ctx->saved_data["reference"] = reference;
    return reference ? reference::yoso_expectation_forward(q, k, v, mask, hash_bits)
                     : fwd.call(q, k, v, mask, hash_bits);
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grads) {
    static auto bwd =
        op_handle<decltype(expectation_backward_cpu)>("longattn::_yoso_expectation_backward");
    auto s = ctx->get_saved_variables();
    const int64_t tau = ctx->saved_data["hash_bits"].toInt(), derivative = ctx->saved_data["derivative"].toInt();
    auto [gq, gk, gv] =
        ctx->saved_data["reference"].toBool()
            ? reference::yoso_expectation_backward(grads[0], s[0], s[1], s[2], unsaved(s[3]), tau, derivative)
            : bwd.call(grads[0], s[0], s[1], s[2], unsaved(s[3]), tau, derivative);
    return {gq, gk, gv, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// Shared checks of q, k, v, the mask and τ; returns the mask made contiguous (or none).
OptTensor check_common(const char* op, const at::Tensor& q, const at::Tensor& k,
                       const at::Tensor& v, const OptTensor& key_padding_mask,
                       int64_t hash_bits) {
  const QkvSizes n = check_qkv(op, q, k, v);
  if (n.D == 0 && n.B * n.H * (n.Nq + n.Nk) > 0)
    fail(op, "q and k need a head dim D >= 1 (their direction is what is hashed), got D = 0");
  if (hash_bits < 1 || hash_bits > kernels::kYosoMaxHashBits)
    fail(op, "hash_bits must be in [1, " + std::to_string(kernels::kYosoMaxHashBits) +
                 "] (codes are int32; memory does not depend on it), got " + std::to_string(hash_bits));
  return checked_key_mask(op, key_padding_mask, n.B, n.Nk);
}

at::Tensor yoso_attention_impl(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               int64_t hash_bits, int64_t num_hashes, int64_t seed,
                               const OptTensor& key_padding_mask, c10::string_view hashing,
                               c10::string_view backward, c10::string_view path) {
  OptTensor mask = check_common(kOp, q, k, v, key_padding_mask, hash_bits);
  // On CPU the reference is called directly; other devices reach it through the dispatcher.
  const bool reference = calls_reference_directly(takes_reference_path(kOp, path, q), q);
  // The codes take 4·B·H·m·(Nq + Nk) bytes (kept for the backward): m is capped to keep an
  // accidental huge value from trying to allocate terabytes.
  constexpr int64_t kMaxHashes = 1 << 16;
  if (num_hashes < 1 || num_hashes > kMaxHashes)
    fail(kOp, "num_hashes must be in [1, " + std::to_string(kMaxHashes) + "], got " +
                  std::to_string(num_hashes));
  // Codes in the order of kernels::YosoHashing.
  const int64_t h = option_code(kOp, "hashing", hashing, {"gaussian", "hadamard"});
  const bool lsh = option_code(kOp, "backward", backward, {"lsh", "exact"}) == 0;
  const at::Tensor qz = q.size(2) == k.size(2) ? zero_masked_rows(q, mask, 2) : q;
  return YosoAttentionFunction::apply(last_dim_contiguous(qz), last_dim_contiguous(zero_masked_rows(k, mask, 2)),
                                      last_dim_contiguous(zero_masked_rows(v, mask, 2)), mask, hash_bits, num_hashes, seed,
                                      h, lsh, reference);
}

at::Tensor yoso_expectation_impl(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                 int64_t hash_bits, const OptTensor& key_padding_mask,
                                 c10::string_view backward, c10::string_view path) {
  OptTensor mask = check_common(kOpE, q, k, v, key_padding_mask, hash_bits);
  const bool reference = calls_reference_directly(takes_reference_path(kOpE, path, q), q);
  // Codes in the order of kernels::YosoDerivative.
  const int64_t d = option_code(kOpE, "backward", backward, {"exact", "surrogate"});
  const at::Tensor qz = q.size(2) == k.size(2) ? zero_masked_rows(q, mask, 2) : q;
  return YosoExpectationFunction::apply(last_dim_contiguous(qz), last_dim_contiguous(zero_masked_rows(k, mask, 2)),
                                        last_dim_contiguous(zero_masked_rows(v, mask, 2)), mask, hash_bits, d,
                                        reference);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(longattn, m) {
  m.def(
      "yoso_attention(Tensor q, Tensor k, Tensor v, *, int hash_bits, int num_hashes, int seed, "
      "Tensor? key_padding_mask=None, str hashing='gaussian', str backward='lsh', str path='fused') -> Tensor");
  m.def(
      "yoso_expectation(Tensor q, Tensor k, Tensor v, *, int hash_bits, "
      "Tensor? key_padding_mask=None, str backward='exact', str path='fused') -> Tensor");
  m.def(
      "_yoso_hash(Tensor q, Tensor k, Tensor? key_padding_mask, int hash_bits, int num_hashes, "
      "int seed, int hashing) -> (Tensor, Tensor)");
  m.def(
      "_yoso_forward(Tensor q, Tensor k, Tensor v, Tensor q_codes, Tensor k_codes, "
      "int hash_bits) -> Tensor");
  m.def(
      "_yoso_backward_lsh(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor q_codes, "
      "Tensor k_codes, int hash_bits) -> (Tensor, Tensor, Tensor)");
  m.def(
      "_yoso_expectation_forward(Tensor q, Tensor k, Tensor v, Tensor? key_padding_mask, "
      "int hash_bits) -> Tensor");
  m.def(
      "_yoso_expectation_backward(Tensor grad_out, Tensor q, Tensor k, Tensor v, "
      "Tensor? key_padding_mask, int hash_bits, int derivative) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(longattn, CPU, m) {
  m.impl("_yoso_hash", hash_cpu);
  m.impl("_yoso_forward", forward_cpu);
  m.impl("_yoso_backward_lsh", backward_lsh_cpu);
  m.impl("_yoso_expectation_forward", expectation_forward_cpu);
  m.impl("_yoso_expectation_backward", expectation_backward_cpu);
}

TORCH_LIBRARY_IMPL(longattn, Meta, m) {
  m.impl("_yoso_hash", hash_meta);
  m.impl("_yoso_forward", forward_meta);
  m.impl("_yoso_backward_lsh", backward_lsh_meta);
  m.impl("_yoso_expectation_forward", expectation_forward_meta);
  m.impl("_yoso_expectation_backward", expectation_backward_meta);
}

// Every device without the fused kernels (CUDA, XPU, MPS, ...) takes the reference path.
TORCH_LIBRARY_IMPL(longattn, CompositeExplicitAutograd, m) {
  m.impl("_yoso_hash", reference::yoso_hash);
  m.impl("_yoso_forward", reference::yoso_forward);
  m.impl("_yoso_backward_lsh", reference::yoso_backward_lsh);
  m.impl("_yoso_expectation_forward", reference::yoso_expectation_forward);
  m.impl("_yoso_expectation_backward", reference::yoso_expectation_backward);
}

TORCH_LIBRARY_IMPL(longattn, CompositeImplicitAutograd, m) {
  m.impl("yoso_attention", yoso_attention_impl);
  m.impl("yoso_expectation", yoso_expectation_impl);
}

}  // namespace longattn::ops

namespace longattn {

at::Tensor yoso_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                          const YosoOptions& o) {
  static auto op = ops::op_handle<decltype(ops::yoso_attention_impl)>("longattn::yoso_attention");
  return op.call(q, k, v, o.hash_bits, o.num_hashes, o.seed, o.key_padding_mask, o.hashing,
                 o.backward, o.path);
}

at::Tensor yoso_expectation(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            const YosoExpectationOptions& o) {
  static auto op =
      ops::op_handle<decltype(ops::yoso_expectation_impl)>("longattn::yoso_expectation");
  return op.call(q, k, v, o.hash_bits, o.key_padding_mask, o.backward, o.path);
}

}  // namespace longattn
