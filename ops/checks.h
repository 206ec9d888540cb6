// Argument checks for the torch binding. Every message names the operator, what was
// expected and what was given, so a user can fix the call without reading our code.
//
// Sizes are read as c10::SymInt: under torch.compile with dynamic shapes the public operators'
// C++ bodies run on fake tensors whose sizes are symbols, where `size()` would throw. A check
// on a symbol records a guard, so the compiled graph is re-traced when it stops holding.
#pragma once
#include <torch/types.h>

#include <sstream>
#include <string>
#include <vector>

namespace longattn::ops {

std::string shape_str(c10::SymIntArrayRef sizes);
std::string str(const c10::SymInt& n);

// Raises c10::Error("<op>: <message>").
[[noreturn]] void fail(const char* op, const std::string& message);

// t must have exactly `rank` dimensions; `layout` names them, e.g. "[B, H, Nq, D]".
void check_rank(const char* op, const char* name, const at::Tensor& t, int64_t rank,
                const char* layout);

// t.size(d) == want[d] for every d where want[d] >= 0 (-1 = any); `layout` names the dims.
void check_shape(const char* op, const char* name, const at::Tensor& t,
                 const std::vector<c10::SymInt>& want, const char* layout);

// float32 or float64, and every tensor in `others` of the same dtype and device as `ref`.
void check_float_dtype(const char* op, const char* name, const at::Tensor& t);
void check_same_dtype_device(const char* op, const char* ref_name, const at::Tensor& ref,
                             const char* name, const at::Tensor& t);
// A learned parameter given with data (a bias, Toeplitz coefficients, partition weights, a
// projection): the dtype of `ref`, or float32 where `ref` is bfloat16/float16 (as a model's
// float32 parameters meet half-precision activations under autocast); the device of `ref`.
void check_param_dtype_device(const char* op, const char* ref_name, const at::Tensor& ref,
                              const char* name, const at::Tensor& t);
void check_cpu(const char* op, const at::Tensor& t);

// A [B, N] boolean key mask (True = takes part).
void check_key_padding_mask(const char* op, const at::Tensor& mask, const c10::SymInt& B,
                            const c10::SymInt& N);

// Nq == Nk, which `what` ("causal=True", "rel_bias") needs.
void check_square(const char* op, const char* what, const c10::SymInt& Nq, const c10::SymInt& Nk);

// max(2N - 1, 0): the length of a relative-offset vector over N positions.
c10::SymInt offsets_len(const c10::SymInt& N);

// A view of t whose last dimension is contiguous (copies only when it is not).
at::Tensor last_dim_contiguous(const at::Tensor& t);

}  // namespace longattn::ops
