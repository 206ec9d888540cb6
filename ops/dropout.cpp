// torch binding of the counter-based dropout.
#include <ATen/Parallel.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <cmath>
#include <sstream>
#include <string>

#include "kernels/dropout/dropout.h"
#include "longattn/dropout.h"
#include "ops/common.h"
#include "ops/reference/dropout.h"

namespace longattn::ops {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

at::Tensor dropout_apply(const at::Tensor& x, double p, int64_t seed) {
  // Half precision: the same mask, the scaling in float32 (ops/common.h).
  if (is_half(x)) return as_dtype_of(dropout_apply(to_float32(x), p, seed), x);
  at::Tensor xc = x.contiguous();
  at::Tensor y = at::empty(x.sizes(), x.options());
  if (y.numel() == 0) return y;
  kernels::DropoutParams dp{p, uint64_t(seed), at::get_num_threads()};
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "dropout", [&] {
    kernels::dropout_apply<scalar_t>(dp, xc.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), y.numel());
  });
  return y;
}

at::Tensor dropout_apply_meta(const at::Tensor& x, double /*p*/, int64_t /*seed*/) {
  return empty_like_sizes(x, x.sym_sizes());
}

class DropoutFunction : public torch::autograd::Function<DropoutFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, double p, int64_t seed,
                            bool reference) {
    static auto op = op_handle<decltype(dropout_apply)>("longattn::_dropout_apply");
    ctx->saved_data["p"] = p;
    ctx->saved_data["seed"] = seed;
    ctx->saved_data["reference"] = reference;
    return reference ? reference::dropout_apply(x, p, seed) : op.call(x, p, seed);
  }
  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    // The map is linear and diagonal: its adjoint is itself, with the same mask (on the same path).
    return {longattn::dropout(grads[0], ctx->saved_data["p"].toDouble(), ctx->saved_data["seed"].toInt(),
                              ctx->saved_data["reference"].toBool() ? "reference" : "fused"),
            at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

at::Tensor dropout_impl(const at::Tensor& x, double p, int64_t seed, c10::string_view path) {
  constexpr const char* op = "dropout";
  check_float_dtype(op, "x", x);
  // On CPU the reference is called directly; other devices reach it through the dispatcher.
  const bool reference = calls_reference_directly(takes_reference_path(op, path, x), x);
  if (!(p >= 0.0 && p <= kernels::kDropoutMaxP)) {
    std::ostringstream msg;
    msg.precision(17);
    msg << "p must be in [0, 1 - 2^-16] (the mask's resolution is 2^-16; a larger p would drop every element), got "
        << p;
    fail(op, msg.str());
  }
  return DropoutFunction::apply(x, p, seed, reference);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(longattn, m) {
  m.def("dropout(Tensor x, float p, int seed, *, str path=\"fused\") -> Tensor");
  m.def("_dropout_apply(Tensor x, float p, int seed) -> Tensor");
}

TORCH_LIBRARY_IMPL(longattn, CPU, m) { m.impl("_dropout_apply", dropout_apply); }

TORCH_LIBRARY_IMPL(longattn, Meta, m) { m.impl("_dropout_apply", dropout_apply_meta); }

// Every device without the fused kernel (CUDA, XPU, MPS, ...) takes the reference path.
TORCH_LIBRARY_IMPL(longattn, CompositeExplicitAutograd, m) {
  m.impl("_dropout_apply", reference::dropout_apply);
}

TORCH_LIBRARY_IMPL(longattn, CompositeImplicitAutograd, m) { m.impl("dropout", dropout_impl); }

}  // namespace longattn::ops

namespace longattn {

at::Tensor dropout(const at::Tensor& x, double p, int64_t seed, const std::string& path) {
  static auto op = ops::op_handle<decltype(ops::dropout_impl)>("longattn::dropout");
  return op.call(x, p, seed, path);
}

}  // namespace longattn
