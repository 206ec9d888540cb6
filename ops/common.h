// What every binding in ops/ does the same way: call operators through the dispatcher, carry
// optional tensors through autograd, hand a key mask to the kernels, check q/k/v, and turn a
// string option into the integer code the internal operators take.
//
// Each operator is public (checks, then a torch::autograd::Function, CompositeImplicitAutograd)
// over internal ones (`_<op>_forward`, `_<op>_backward`) with a CPU kernel and a Meta kernel;
// the Meta kernel states the outputs' shapes and dtypes, which is all torch.compile, FakeTensor
// and torch.library.opcheck need to trace a call without running it. Option enums reach the
// internal operators as `int` codes, parsed once from the public operator's string.
#pragma once
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/types.h>

#include <cstdint>
#include <initializer_list>

#include "ops/checks.h"

namespace longattn::ops {

using OptTensor = c10::optional<at::Tensor>;

// The typed handle of a registered operator ("longattn::name"); `Sig` is the C++ signature of
// its schema. Keep it in a function-local static: the look-up happens once per process.
template <class Sig>
c10::TypedOperatorHandle<Sig> op_handle(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Sig>();
}

// Autograd saves tensors, not optionals: an absent tensor travels as an undefined one.
inline at::Tensor saved(const OptTensor& t) { return t ? *t : at::Tensor(); }
inline OptTensor unsaved(const at::Tensor& t) { return t.defined() ? OptTensor(t) : c10::nullopt; }
inline bool given(const OptTensor& t) { return t && t->defined(); }

// A contiguous [B, N] bool key mask as the kernels take it: bytes (1 = takes part) and the batch
// stride; null when there is no mask.
struct KeyMaskView {
  const uint8_t* data = nullptr;
  int64_t stride_b = 0;
};
KeyMaskView key_mask_view(const OptTensor& mask);

// The sizes of q [B, H, Nq, D], k [B, H, Nk, D], v [B, H, Nk, Dv].
struct QkvSizes {
  c10::SymInt B, H, Nq, Nk, D, Dv;
};
// Ranks, dtype (float32/float64, shared), device (CPU) and shapes of q, k, v.
QkvSizes check_qkv(const char* op, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v);

// The key_padding_mask checked against [B, N] and made contiguous; nullopt when absent.
OptTensor checked_key_mask(const char* op, const OptTensor& mask, const c10::SymInt& B,
                           const c10::SymInt& N);

// The index of `value` among `known` (the code the internal operators take); otherwise fails
// with "<option> must be 'a', 'b' or 'c', got 'value'".
int64_t option_code(const char* op, const char* option, c10::string_view value,
                    std::initializer_list<const char*> known);

// The path an operator takes. Every operator has two implementations: the fused CPU kernel
// (kernels/, through the `_<op>_forward/_backward` CPU kernels) and the reference path
// (ops/reference/): the same formula written with ATen operations, device-generic and never
// holding an N x N tensor. The reference path is registered for every device without a fused
// kernel (CUDA, XPU, MPS, ...: the internal operators' CompositeExplicitAutograd kernels), and on
// CPU the public operators' keyword `path="reference"` selects it. True when `t` (the operator's
// main input) takes the reference path: `path` is "fused" (the default) or "reference", anything
// else fails naming both; a non-CPU tensor takes it whatever `path` says ("fused" means "the
// fastest there is"); Meta tensors keep the fused path, whose Meta kernels describe it.
// The environment variable LONGATTN_PATH=reference sends every call to the reference path (as
// LONGATTN_ISA forces an instruction-set level): a whole model or `longattn train` on CPU then runs
// the code a GPU runs, for tests and comparisons.
bool takes_reference_path(const char* op, c10::string_view path, const at::Tensor& t);
bool reference_path_forced();
// Whether an operator's autograd Function calls its reference functions itself instead of the
// internal operators through the dispatcher: the reference path was chosen (`reference`, from
// takes_reference_path), `t` is on the CPU (where the dispatcher would pick the fused kernel;
// other devices reach the reference through the internal operators' CompositeExplicitAutograd
// kernels) and holds real data with concrete sizes. Fake tensors (torch.compile, opcheck: the
// Python or Functionalize keys) and symbolic sizes take the dispatcher, whose Meta kernels describe
// the call: the reference's chunk loops and host reads need real sizes and values. A compiled
// graph on CPU therefore runs the fused kernels (the same formula). One rule for every operator.
bool calls_reference_directly(bool reference, const at::Tensor& t);

// The reference path's working-set budget, in elements: a chunk of query rows (or channels) is
// sized so that its largest temporary ([B, H, rows, N] logits, say) holds at most this many
// elements (at least one row per chunk). 2^24 elements = 64 MiB of float32. docs/reference_path.md
// states each operator's peak memory in terms of it.
constexpr int64_t kReferenceChunkElements = int64_t(1) << 24;
// Rows per chunk when one row costs `per_row` elements: max(1, budget / per_row).
int64_t reference_chunk_rows(int64_t per_row);

// The scale of the logits: `scale` if given (and finite), otherwise 1/sqrt(D) (1 for D = 0).
double logit_scale(const char* op, c10::optional<double> scale, const c10::SymInt& D);

// Empty [sizes] tensors with t's options: for Meta kernels, whose sizes may be symbols.
at::Tensor empty_like_sizes(const at::Tensor& t, c10::SymIntArrayRef sizes);

// bfloat16 and float16. The kernels compute and accumulate in float32 (or float64) only, so a CPU
// kernel given half-precision tensors calls itself on float32 copies made for that call and
// returns its results in the callers' dtypes. What autograd saves stays in the half dtype (half
// the memory of float32) except the per-row statistics that backward reads (log-sum-exps,
// denominators, stabiliser shifts): rounding them to 8 bits of mantissa would cost percents of
// accuracy, so they are float32 (`stat_dtype`), and the Meta kernels say so.
inline bool is_half(const at::Tensor& t) {
  return t.defined() && (t.scalar_type() == at::kBFloat16 || t.scalar_type() == at::kHalf);
}
inline bool is_half(const OptTensor& t) { return given(t) && is_half(*t); }
// t in float32 if it is half precision; otherwise t itself.
inline at::Tensor to_float32(const at::Tensor& t) { return is_half(t) ? t.to(at::kFloat) : t; }
inline OptTensor to_float32(const OptTensor& t) { return is_half(t) ? OptTensor(t->to(at::kFloat)) : t; }
// A result computed in float32 returned in the dtype of `like` (undefined stays undefined).
inline at::Tensor as_dtype_of(const at::Tensor& t, const at::Tensor& like) {
  return t.defined() && like.defined() && t.scalar_type() != like.scalar_type() ? t.to(like.scalar_type()) : t;
}
inline at::Tensor as_dtype_of(const at::Tensor& t, const OptTensor& like) {
  return given(like) ? as_dtype_of(t, *like) : t;
}
// The dtype of a per-row statistic computed from t: float32 for half precision, else t's.
inline at::ScalarType stat_dtype(const at::Tensor& t) { return is_half(t) ? at::kFloat : t.scalar_type(); }

}  // namespace longattn::ops
