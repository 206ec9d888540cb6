// torch binding of the Toeplitz products (1-D and 2-D): the FastRPB bias B v and the building
// block of relative positions by FFT.
#include <ATen/Parallel.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include "kernels/toeplitz/toeplitz.h"
#include "longattn/toeplitz.h"
#include "ops/common.h"
#include "ops/reference/toeplitz.h"
#include "ops/views.h"

namespace longattn::ops {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

// The internal operators take the path as its kernels::ToeplitzPath code.
kernels::ToeplitzPath path_from(int64_t code) { return static_cast<kernels::ToeplitzPath>(code); }

// The path option: the kernel's ToeplitzPath codes, or "reference" (ops/reference/toeplitz.h),
// which never reaches the kernel. A tensor on a device without the fused kernel takes the
// reference whatever the option says (the internal operators' CompositeExplicitAutograd
// kernels); Meta tensors keep the fused path's Meta kernels. LONGATTN_PATH=reference (ops/common.h)
// sends every call to the reference, as for the other operators.
struct PathChoice {
  int64_t code;    // the kernel's path (Auto when the reference is taken)
  bool reference;  // the autograd Function calls the reference functions directly (CPU)
};

PathChoice path_choice(const char* op, c10::string_view path, const at::Tensor& x) {
  const int64_t code = option_code(op, "path", path, {"auto", "direct", "fft", "reference"});
  // "reference", or the rule every operator follows for the others (ops/common.h).
  const bool reference = code == 3 || takes_reference_path(op, "fused", x);
  return {reference ? int64_t(kernels::ToeplitzPath::Auto) : code,
          calls_reference_directly(reference, x)};
}

// ------------------------------------------------------------------------------------- 1-D

template <class T>
kernels::ToeplitzParams<T> params_1d(const at::Tensor& coeffs, const at::Tensor& x, bool causal,
                                     int64_t path) {
  kernels::ToeplitzParams<T> p;
  p.x = bhnd<const T>(x);
  p.coeffs = coeffs.data_ptr<T>();
  p.coeffs_stride_h = coeffs.stride(0);
  p.causal = causal;
  p.path = path_from(path);
  p.threads = at::get_num_threads();
  return p;
}

// Inputs arrive checked: coeffs contiguous, x with a contiguous last dimension.
at::Tensor forward_1d(const at::Tensor& coeffs, const at::Tensor& x, bool causal, int64_t path) {
  if (is_half(x))  // computed in float32 (ops/common.h)
    return as_dtype_of(forward_1d(to_float32(coeffs), to_float32(x), causal, path), x);
  at::Tensor y = at::empty(x.sizes(), x.options());
  if (y.numel() == 0) return y;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "toeplitz_matmul_forward", [&] {
    kernels::toeplitz_forward<scalar_t>(params_1d<scalar_t>(coeffs, x, causal, path),
                                        bhnd<scalar_t>(y));
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor> backward_1d(const at::Tensor& grad_y, const at::Tensor& coeffs,
                                               const at::Tensor& x, bool causal, int64_t path,
                                               bool want_x, bool want_coeffs) {
  if (is_half(x)) {  // computed in float32 (ops/common.h), returned in the inputs' dtypes
    auto [gx, gc] = backward_1d(to_float32(grad_y), to_float32(coeffs), to_float32(x), causal, path, want_x,
                                want_coeffs);
    return {as_dtype_of(gx, x), as_dtype_of(gc, coeffs)};
  }
  at::Tensor gx = want_x ? at::empty(x.sizes(), x.options()) : at::Tensor();
  at::Tensor gc = want_coeffs ? at::empty(coeffs.sizes(), coeffs.options()) : at::Tensor();
  if (x.numel() == 0) {
    if (want_x) gx.zero_();
    if (want_coeffs) gc.zero_();
    return {gx, gc};
  }
  at::Tensor g = last_dim_contiguous(grad_y);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "toeplitz_matmul_backward", [&] {
    kernels::ToeplitzGrads<scalar_t> gr;
    gr.grad_y = bhnd<const scalar_t>(g);
    if (want_x) gr.grad_x = bhnd<scalar_t>(gx);
    gr.grad_coeffs = want_coeffs ? gc.data_ptr<scalar_t>() : nullptr;
    kernels::toeplitz_backward<scalar_t>(params_1d<scalar_t>(coeffs, x, causal, path), gr);
  });
  return {gx, gc};
}

at::Tensor forward_1d_meta(const at::Tensor& /*coeffs*/, const at::Tensor& x, bool /*causal*/,
                           int64_t /*path*/) {
  return empty_like_sizes(x, x.sym_sizes());
}

std::tuple<at::Tensor, at::Tensor> backward_1d_meta(const at::Tensor& /*grad_y*/,
                                                    const at::Tensor& coeffs, const at::Tensor& x,
                                                    bool /*causal*/, int64_t /*path*/, bool want_x,
                                                    bool want_coeffs) {
  return {want_x ? empty_like_sizes(x, x.sym_sizes()) : at::Tensor(),
          want_coeffs ? empty_like_sizes(coeffs, coeffs.sym_sizes()) : at::Tensor()};
}

class Toeplitz1dFunction : public torch::autograd::Function<Toeplitz1dFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& coeffs, const at::Tensor& x,
                            bool causal, int64_t path, bool reference) {
    static auto op = op_handle<decltype(forward_1d)>("longattn::_toeplitz_matmul_forward");
    ctx->save_for_backward({coeffs, x});
    ctx->saved_data["causal"] = causal;
    ctx->saved_data["path"] = path;
    ctx->saved_data["reference"] = reference;
    return reference ? reference::toeplitz_forward(coeffs, x, causal, path) : op.call(coeffs, x, causal, path);
  }
  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    static auto op = op_handle<decltype(backward_1d)>("longattn::_toeplitz_matmul_backward");
    auto s = ctx->get_saved_variables();
    const bool causal = ctx->saved_data["causal"].toBool();
    const int64_t path = ctx->saved_data["path"].toInt();
    auto [gx, gc] = ctx->saved_data["reference"].toBool()
                        ? reference::toeplitz_backward(grads[0], s[0], s[1], causal, path,
                                                       ctx->needs_input_grad(1), ctx->needs_input_grad(0))
                        : op.call(grads[0], s[0], s[1], causal, path, ctx->needs_input_grad(1),
                                  ctx->needs_input_grad(0));
    return {gc, gx, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

void check_common(const char* op, const at::Tensor& x) {
  check_rank(op, "x", x, 4, "[B, H, N, C]");
  check_float_dtype(op, "x", x);
}

at::Tensor toeplitz_matmul_impl(const at::Tensor& coeffs, const at::Tensor& x, bool causal,
                                c10::string_view path) {
  constexpr const char* op = "toeplitz_matmul";
  check_common(op, x);
  check_rank(op, "coeffs", coeffs, 2, "[H, 2N-1]");
  check_param_dtype_device(op, "x", x, "coeffs", coeffs);
  check_shape(op, "coeffs", coeffs, {x.sym_size(1), offsets_len(x.sym_size(2))}, "[H, 2N-1]");
  const PathChoice pc = path_choice(op, path, x);
  return Toeplitz1dFunction::apply(coeffs.contiguous(), last_dim_contiguous(x), causal, pc.code, pc.reference);
}

// ------------------------------------------------------------------------------------- 2-D

template <class T>
kernels::Toeplitz2dParams<T> params_2d(const at::Tensor& row, const at::Tensor& col,
                                       const at::Tensor& x, int64_t height, int64_t width,
                                       int64_t path) {
  kernels::Toeplitz2dParams<T> p;
  p.x = bhnd<const T>(x);
  p.row_coeffs = row.data_ptr<T>();
  p.col_coeffs = col.data_ptr<T>();
  p.row_stride_h = row.stride(0);
  p.col_stride_h = col.stride(0);
  p.height = height;
  p.width = width;
  p.path = path_from(path);
  p.threads = at::get_num_threads();
  return p;
}

at::Tensor forward_2d(const at::Tensor& row, const at::Tensor& col, const at::Tensor& x,
                      int64_t height, int64_t width, int64_t path) {
  if (is_half(x))  // computed in float32 (ops/common.h)
    return as_dtype_of(forward_2d(to_float32(row), to_float32(col), to_float32(x), height, width, path), x);
  at::Tensor y = at::empty(x.sizes(), x.options());
  if (y.numel() == 0) return y;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "toeplitz_matmul_2d_forward", [&] {
    kernels::toeplitz2d_forward<scalar_t>(params_2d<scalar_t>(row, col, x, height, width, path),
                                          bhnd<scalar_t>(y));
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_2d(const at::Tensor& grad_y,
                                                           const at::Tensor& row,
                                                           const at::Tensor& col,
                                                           const at::Tensor& x, int64_t height,
                                                           int64_t width, int64_t path) {
  if (is_half(x)) {  // computed in float32 (ops/common.h), returned in the inputs' dtypes
    auto [gx, gr, gc] = backward_2d(to_float32(grad_y), to_float32(row), to_float32(col), to_float32(x), height,
                                    width, path);
    return {as_dtype_of(gx, x), as_dtype_of(gr, row), as_dtype_of(gc, col)};
  }
  at::Tensor gx = at::empty(x.sizes(), x.options());
  at::Tensor gr = at::empty(row.sizes(), row.options());
  at::Tensor gc = at::empty(col.sizes(), col.options());
  if (x.numel() == 0) {
    gx.zero_(), gr.zero_(), gc.zero_();
    return {gx, gr, gc};
  }
  at::Tensor g = last_dim_contiguous(grad_y);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "toeplitz_matmul_2d_backward", [&] {
    kernels::Toeplitz2dGrads<scalar_t> grads{bhnd<const scalar_t>(g), bhnd<scalar_t>(gx),
                                             gr.data_ptr<scalar_t>(), gc.data_ptr<scalar_t>()};
    kernels::toeplitz2d_backward<scalar_t>(params_2d<scalar_t>(row, col, x, height, width, path),
                                           grads);
  });
  return {gx, gr, gc};
}

at::Tensor forward_2d_meta(const at::Tensor& /*row*/, const at::Tensor& /*col*/, const at::Tensor& x,
                           int64_t /*height*/, int64_t /*width*/, int64_t /*path*/) {
  return empty_like_sizes(x, x.sym_sizes());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_2d_meta(
    const at::Tensor& /*grad_y*/, const at::Tensor& row, const at::Tensor& col, const at::Tensor& x,
    int64_t /*height*/, int64_t /*width*/, int64_t /*path*/) {
  return {empty_like_sizes(x, x.sym_sizes()), empty_like_sizes(row, row.sym_sizes()),
          empty_like_sizes(col, col.sym_sizes())};
}

class Toeplitz2dFunction : public torch::autograd::Function<Toeplitz2dFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& row, const at::Tensor& col,
                            const at::Tensor& x, int64_t height, int64_t width, int64_t path,
                            bool reference) {
    static auto op = op_handle<decltype(forward_2d)>("longattn::_toeplitz_matmul_2d_forward");
    ctx->save_for_backward({row, col, x});
    ctx->saved_data["height"] = height;
    ctx->saved_data["width"] = width;
    ctx->saved_data["path"] = path;
    ctx->saved_data["reference"] = reference;
    return reference ? reference::toeplitz2d_forward(row, col, x, height, width, path)
                     : op.call(row, col, x, height, width, path);
  }
  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    static auto op = op_handle<decltype(backward_2d)>("longattn::_toeplitz_matmul_2d_backward");
    auto s = ctx->get_saved_variables();
    const int64_t height = ctx->saved_data["height"].toInt(), width = ctx->saved_data["width"].toInt();
    const int64_t path = ctx->saved_data["path"].toInt();
    auto [gx, gr, gc] = ctx->saved_data["reference"].toBool()
                            ? reference::toeplitz2d_backward(grads[0], s[0], s[1], s[2], height, width, path)
                            : op.call(grads[0], s[0], s[1], s[2], height, width, path);
    return {gr, gc, gx, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

at::Tensor toeplitz_matmul_2d_impl(const at::Tensor& row, const at::Tensor& col,
                                   const at::Tensor& x, int64_t height, int64_t width,
                                   c10::string_view path) {
  constexpr const char* op = "toeplitz_matmul_2d";
  check_common(op, x);
  if (height < 1 || width < 1)
    fail(op, "height and width must be >= 1, got height = " + std::to_string(height) +
                 " and width = " + std::to_string(width));
  const c10::SymInt H = x.sym_size(1), N = x.sym_size(2);
  if (N != height * width)
    fail(op, "x must have N = height * width = " + std::to_string(height * width) +
                 " positions (an image flattened row by row), got N = " + str(N));
  check_rank(op, "row_coeffs", row, 2, "[H, 2*height-1]");
  check_rank(op, "col_coeffs", col, 2, "[H, 2*width-1]");
  check_param_dtype_device(op, "x", x, "row_coeffs", row);
  check_param_dtype_device(op, "x", x, "col_coeffs", col);
  check_shape(op, "row_coeffs", row, {H, 2 * height - 1}, "[H, 2*height-1]");
  check_shape(op, "col_coeffs", col, {H, 2 * width - 1}, "[H, 2*width-1]");
  const PathChoice pc = path_choice(op, path, x);
  return Toeplitz2dFunction::apply(row.contiguous(), col.contiguous(), last_dim_contiguous(x),
                                   height, width, pc.code, pc.reference);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(longattn, m) {
  m.def("toeplitz_matmul(Tensor coeffs, Tensor x, *, bool causal=False, str path=\"auto\") -> Tensor");
  m.def("_toeplitz_matmul_forward(Tensor coeffs, Tensor x, bool causal, int path) -> Tensor");
  m.def(
      "_toeplitz_matmul_backward(Tensor grad_y, Tensor coeffs, Tensor x, bool causal, int path, "
      "bool want_x, bool want_coeffs) -> (Tensor, Tensor)");
  m.def(
      "toeplitz_matmul_2d(Tensor row_coeffs, Tensor col_coeffs, Tensor x, *, int height, "
      "int width, str path=\"auto\") -> Tensor");
  m.def(
      "_toeplitz_matmul_2d_forward(Tensor row_coeffs, Tensor col_coeffs, Tensor x, int height, "
      "int width, int path) -> Tensor");
  m.def(
      "_toeplitz_matmul_2d_backward(Tensor grad_y, Tensor row_coeffs, Tensor col_coeffs, "
      "Tensor x, int height, int width, int path) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(longattn, CPU, m) {
  m.impl("_toeplitz_matmul_forward", forward_1d);
  m.impl("_toeplitz_matmul_backward", backward_1d);
  m.impl("_toeplitz_matmul_2d_forward", forward_2d);
  m.impl("_toeplitz_matmul_2d_backward", backward_2d);
}

TORCH_LIBRARY_IMPL(longattn, Meta, m) {
  m.impl("_toeplitz_matmul_forward", forward_1d_meta);
  m.impl("_toeplitz_matmul_backward", backward_1d_meta);
  m.impl("_toeplitz_matmul_2d_forward", forward_2d_meta);
  m.impl("_toeplitz_matmul_2d_backward", backward_2d_meta);
}

// Every device without the fused kernel (CUDA, XPU, MPS, ...) takes the reference path.
TORCH_LIBRARY_IMPL(longattn, CompositeExplicitAutograd, m) {
  m.impl("_toeplitz_matmul_forward", reference::toeplitz_forward);
  m.impl("_toeplitz_matmul_backward", reference::toeplitz_backward);
  m.impl("_toeplitz_matmul_2d_forward", reference::toeplitz2d_forward);
  m.impl("_toeplitz_matmul_2d_backward", reference::toeplitz2d_backward);
}

TORCH_LIBRARY_IMPL(longattn, CompositeImplicitAutograd, m) {
  m.impl("toeplitz_matmul", toeplitz_matmul_impl);
  m.impl("toeplitz_matmul_2d", toeplitz_matmul_2d_impl);
}

}  // namespace longattn::ops

namespace longattn {

at::Tensor toeplitz_matmul(const at::Tensor& coeffs, const at::Tensor& x, bool causal,
                           const std::string& path) {
  static auto op = ops::op_handle<decltype(ops::toeplitz_matmul_impl)>("longattn::toeplitz_matmul");
  return op.call(coeffs, x, causal, path);
}

at::Tensor toeplitz_matmul_2d(const at::Tensor& row_coeffs, const at::Tensor& col_coeffs,
                              const at::Tensor& x, int64_t height, int64_t width,
                              const std::string& path) {
  static auto op =
      ops::op_handle<decltype(ops::toeplitz_matmul_2d_impl)>("longattn::toeplitz_matmul_2d");
  return op.call(row_coeffs, col_coeffs, x, height, width, path);
}

}  // namespace longattn
