// torch binding of the YOSO kernels: yoso_attention (LSH, linear) and yoso_expectation (YOSO-E).
#include <ATen/Parallel.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include "kernels/yoso/yoso.h"
#include "longattn/yoso.h"
#include "ops/checks.h"
#include "ops/masked_rows.h"
#include "ops/views.h"

namespace longattn::ops {
namespace {

constexpr const char* kOp = "yoso_attention";
constexpr const char* kOpE = "yoso_expectation";

using OptTensor = c10::optional<at::Tensor>;

// The key mask also masks queries in self-attention (Nq == Nk), as the authors' layer does.
template <class T>
kernels::YosoParams<T> make_params(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                   const OptTensor& mask, int64_t hash_bits, int64_t num_hashes,
                                   int64_t seed, int64_t hashing) {
  kernels::YosoParams<T> p;
  p.q = bhnd<const T>(q);
  p.k = bhnd<const T>(k);
  p.v = bhnd<const T>(v);
  if (mask && mask->defined()) {
    p.key_padding_mask = reinterpret_cast<const uint8_t*>(mask->data_ptr<bool>());
    p.key_mask_stride_b = mask->stride(0);
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

// Runs f(params, grads) on freshly allocated gradients (zeros for an empty problem).
template <class F>
Grads3 with_grads(const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k,
                  const at::Tensor& v, F f) {
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
    f(scalar_t(0), g);
  });
  return {gq, gk, gv};
}

Grads3 backward_lsh_cpu(const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k,
                        const at::Tensor& v, const at::Tensor& q_codes, const at::Tensor& k_codes,
                        int64_t hash_bits) {
  return with_grads(grad_out, q, k, v, [&](auto zero, const auto& g) {
    using T = decltype(zero);
    auto p = make_params<T>(q, k, v, c10::nullopt, hash_bits, q_codes.size(2), 0, 0);
    kernels::yoso_backward_lsh<T>(p, q_codes.data_ptr<int32_t>(), k_codes.data_ptr<int32_t>(), g);
  });
}

at::Tensor expectation_forward_cpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                   const OptTensor& mask, int64_t hash_bits) {
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
  return with_grads(grad_out, q, k, v, [&](auto zero, const auto& g) {
    using T = decltype(zero);
    auto p = make_params<T>(q, k, v, mask, hash_bits, 1, 0, 0);
    kernels::yoso_expectation_backward<T>(p, g, static_cast<kernels::YosoDerivative>(derivative));
  });
}

template <class Sig>
c10::TypedOperatorHandle<Sig> internal_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Sig>();
}

class YosoAttentionFunction : public torch::autograd::Function<YosoAttentionFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& q,
                            const at::Tensor& k, const at::Tensor& v, const OptTensor& mask,
                            int64_t hash_bits, int64_t num_hashes, int64_t seed, int64_t hashing,
                            bool lsh_backward) {
    static auto hash = internal_op<decltype(hash_cpu)>("longattn::_yoso_hash");
    static auto fwd = internal_op<decltype(forward_cpu)>("longattn::_yoso_forward");
    auto [qc, kc] = hash.call(q, k, mask, hash_bits, num_hashes, seed, hashing);
    at::Tensor out = fwd.call(q, k, v, qc, kc, hash_bits);
    // The codes are kept for the LSH backward only (the exact one does not need them).
    ctx->save_for_backward({q, k, v, lsh_backward ? qc : at::Tensor(),
                            lsh_backward ? kc : at::Tensor(), mask ? *mask : at::Tensor()});
    ctx->saved_data["hash_bits"] = hash_bits;
    ctx->saved_data["lsh"] = lsh_backward;
    return out;
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grads) {
    static auto lsh = internal_op<decltype(backward_lsh_cpu)>("longattn::_yoso_backward_lsh");
    static auto exact =
        internal_op<decltype(expectation_backward_cpu)>("longattn::_yoso_expectation_backward");
    auto s = ctx->get_saved_variables();
    const int64_t tau = ctx->saved_data["hash_bits"].toInt();
    OptTensor mask = s[5].defined() ? OptTensor(s[5]) : c10::nullopt;
    auto [gq, gk, gv] =
        ctx->saved_data["lsh"].toBool()
            ? lsh.call(grads[0], s[0], s[1], s[2], s[3], s[4], tau)
            : exact.call(grads[0], s[0], s[1], s[2], mask, tau,
                         int64_t(kernels::YosoDerivative::surrogate));
    return {gq, gk, gv, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(),
            at::Tensor()};
  }
};

class YosoExpectationFunction : public torch::autograd::Function<YosoExpectationFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& q,
                            const at::Tensor& k, const at::Tensor& v, const OptTensor& mask,
                            int64_t hash_bits, int64_t derivative) {
    static auto fwd =
        internal_op<decltype(expectation_forward_cpu)>("longattn::_yoso_expectation_forward");
    ctx->save_for_backward({q, k, v, mask ? *mask : at::Tensor()});
    ctx->saved_data["hash_bits"] = hash_bits;
    ctx->saved_data["derivative"] = derivative;
    return fwd.call(q, k, v, mask, hash_bits);
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grads) {
    static auto bwd =
        internal_op<decltype(expectation_backward_cpu)>("longattn::_yoso_expectation_backward");
    auto s = ctx->get_saved_variables();
    OptTensor mask = s[3].defined() ? OptTensor(s[3]) : c10::nullopt;
    auto [gq, gk, gv] = bwd.call(grads[0], s[0], s[1], s[2], mask,
                                 ctx->saved_data["hash_bits"].toInt(),
                                 ctx->saved_data["derivative"].toInt());
    return {gq, gk, gv, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// Shared checks of q, k, v, the mask and τ; returns the mask made contiguous (or none).
OptTensor check_common(const char* op, const at::Tensor& q, const at::Tensor& k,
                       const at::Tensor& v, const OptTensor& key_padding_mask,
                       int64_t hash_bits) {
  check_rank(op, "q", q, 4, "[B, H, Nq, D]");
  check_rank(op, "k", k, 4, "[B, H, Nk, D]");
  check_rank(op, "v", v, 4, "[B, H, Nk, Dv]");
  check_float_dtype(op, "q", q);
  check_same_dtype_device(op, "q", q, "k", k);
  check_same_dtype_device(op, "q", q, "v", v);
  if (!q.device().is_cpu()) fail(op, "only CPU tensors are supported in this build, got " + q.device().str());
  const int64_t B = q.size(0), H = q.size(1), D = q.size(3), Nk = k.size(2);
  check_shape(op, "k", k, {B, H, -1, D}, "[B, H, Nk, D]");
  check_shape(op, "v", v, {B, H, Nk, -1}, "[B, H, Nk, Dv]");
  if (D == 0 && B * H * (q.size(2) + Nk) > 0)
    fail(op, "q and k need a head dim D >= 1 (their direction is what is hashed), got D = 0");
  if (hash_bits < 1 || hash_bits > kernels::kYosoMaxHashBits)
    fail(op, "hash_bits must be in [1, " + std::to_string(kernels::kYosoMaxHashBits) +
                 "] (codes are int32; memory does not depend on it), got " + std::to_string(hash_bits));
  if (key_padding_mask && key_padding_mask->defined()) {
    check_key_padding_mask(op, *key_padding_mask, B, Nk);
    return key_padding_mask->contiguous();
  }
  return c10::nullopt;
}

at::Tensor yoso_attention_impl(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               int64_t hash_bits, int64_t num_hashes, int64_t seed,
                               const OptTensor& key_padding_mask, c10::string_view hashing,
                               c10::string_view backward) {
  OptTensor mask = check_common(kOp, q, k, v, key_padding_mask, hash_bits);
  // The codes take 4·B·H·m·(Nq + Nk) bytes (kept for the backward): m is capped to keep an
  // accidental huge value from trying to allocate terabytes.
  constexpr int64_t kMaxHashes = 1 << 16;
  if (num_hashes < 1 || num_hashes > kMaxHashes)
    fail(kOp, "num_hashes must be in [1, " + std::to_string(kMaxHashes) + "], got " +
                  std::to_string(num_hashes));
  int64_t h;
  if (hashing == "gaussian") h = int64_t(kernels::YosoHashing::gaussian);
  else if (hashing == "hadamard") h = int64_t(kernels::YosoHashing::hadamard);
  else fail(kOp, "hashing must be 'gaussian' or 'hadamard', got '" + std::string(hashing) + "'");
  if (backward != "lsh" && backward != "exact")
    fail(kOp, "backward must be 'lsh' or 'exact', got '" + std::string(backward) + "'");
  // Masked queries (self-attention) and keys take part in nothing: zero their rows (see zero_masked_rows).
  const at::Tensor qz = q.size(2) == k.size(2) ? zero_masked_rows(q, mask, 2) : q;
  return YosoAttentionFunction::apply(last_dim_contiguous(qz), last_dim_contiguous(zero_masked_rows(k, mask, 2)),
                                      last_dim_contiguous(zero_masked_rows(v, mask, 2)), mask, hash_bits, num_hashes, seed,
                                      h, backward == "lsh");
}

at::Tensor yoso_expectation_impl(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                 int64_t hash_bits, const OptTensor& key_padding_mask,
                                 c10::string_view backward) {
  OptTensor mask = check_common(kOpE, q, k, v, key_padding_mask, hash_bits);
  int64_t d;
  if (backward == "exact") d = int64_t(kernels::YosoDerivative::exact);
  else if (backward == "surrogate") d = int64_t(kernels::YosoDerivative::surrogate);
  else fail(kOpE, "backward must be 'exact' or 'surrogate', got '" + std::string(backward) + "'");
  const at::Tensor qz = q.size(2) == k.size(2) ? zero_masked_rows(q, mask, 2) : q;
  return YosoExpectationFunction::apply(last_dim_contiguous(qz), last_dim_contiguous(zero_masked_rows(k, mask, 2)),
                                        last_dim_contiguous(zero_masked_rows(v, mask, 2)), mask, hash_bits, d);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(longattn, m) {
  m.def(
      "yoso_attention(Tensor q, Tensor k, Tensor v, *, int hash_bits, int num_hashes, int seed, "
      "Tensor? key_padding_mask=None, str hashing='gaussian', str backward='lsh') -> Tensor");
  m.def(
      "yoso_expectation(Tensor q, Tensor k, Tensor v, *, int hash_bits, "
      "Tensor? key_padding_mask=None, str backward='exact') -> Tensor");
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

TORCH_LIBRARY_IMPL(longattn, CompositeImplicitAutograd, m) {
  m.impl("yoso_attention", yoso_attention_impl);
  m.impl("yoso_expectation", yoso_expectation_impl);
}

}  // namespace longattn::ops

namespace longattn {

at::Tensor yoso_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                          const YosoOptions& o) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("longattn::yoso_attention", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                         int64_t, int64_t, int64_t,
                                         const c10::optional<at::Tensor>&, c10::string_view,
                                         c10::string_view)>();
  return op.call(q, k, v, o.hash_bits, o.num_hashes, o.seed, o.key_padding_mask, o.hashing,
                 o.backward);
}

at::Tensor yoso_expectation(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            const YosoExpectationOptions& o) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("longattn::yoso_expectation", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                         int64_t, const c10::optional<at::Tensor>&,
                                         c10::string_view)>();
  return op.call(q, k, v, o.hash_bits, o.key_padding_mask, o.backward);
}

}  // namespace longattn
