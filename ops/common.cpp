#include "ops/common.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>

namespace longattn::ops {

KeyMaskView key_mask_view(const OptTensor& mask) {
  if (!given(mask)) return {};
  return {reinterpret_cast<const uint8_t*>(mask->data_ptr<bool>()), mask->stride(0)};
}

QkvSizes check_qkv(const char* op, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  check_rank(op, "q", q, 4, "[B, H, Nq, D]");
  check_rank(op, "k", k, 4, "[B, H, Nk, D]");
  check_rank(op, "v", v, 4, "[B, H, Nk, Dv]");
  check_float_dtype(op, "q", q);
  check_same_dtype_device(op, "q", q, "k", k);
  check_same_dtype_device(op, "q", q, "v", v);
  QkvSizes s{q.sym_size(0), q.sym_size(1), q.sym_size(2), k.sym_size(2), q.sym_size(3),
             v.sym_size(3)};
  check_shape(op, "k", k, {s.B, s.H, -1, s.D}, "[B, H, Nk, D]");
  check_shape(op, "v", v, {s.B, s.H, s.Nk, -1}, "[B, H, Nk, Dv]");
  return s;
}

OptTensor checked_key_mask(const char* op, const OptTensor& mask, const c10::SymInt& B,
                           const c10::SymInt& N) {
  if (!given(mask)) return c10::nullopt;
  check_key_padding_mask(op, *mask, B, N);
  return mask->contiguous();
}

int64_t option_code(const char* op, const char* option, c10::string_view value,
                    std::initializer_list<const char*> known) {
  int64_t code = 0;
  std::string list;
  for (const char* name : known) {
    if (value == name) return code;
    ++code;
    list += std::string(list.empty() ? "" : code == int64_t(known.size()) ? " or " : ", ") + "'" +
            name + "'";
  }
  fail(op, std::string(option) + " must be " + list + ", got '" + std::string(value) + "'");
}

double logit_scale(const char* op, c10::optional<double> scale, const c10::SymInt& D) {
  // D is the head dim, fixed by the model: reading it specialises a compiled graph to it.
  const int64_t d = D.guard_int(__FILE__, __LINE__);
  const double s = scale ? *scale : (d > 0 ? 1.0 / std::sqrt(static_cast<double>(d)) : 1.0);
  if (!std::isfinite(s)) fail(op, "scale must be finite, got " + std::to_string(s));
  return s;
}

bool takes_reference_path(const char* op, c10::string_view path, const at::Tensor& t) {
  const bool reference = option_code(op, "path", path, {"fused", "reference"}) == 1;
  return reference || reference_path_forced() || !(t.device().is_cpu() || t.device().is_meta());
}

bool reference_path_forced() {
  // Read at every call (a getenv is cheap beside an operator) so a test may set and unset it.
  const char* v = std::getenv("LONGATTN_PATH");
  if (v == nullptr || *v == '\0' || std::string(v) == "fused") return false;
  if (std::string(v) == "reference") return true;
  fail("LONGATTN_PATH", std::string("must be 'fused' or 'reference' (or unset), got '") + v + "'");
}

bool calls_reference_directly(bool reference, const at::Tensor& t) {
  const c10::DispatchKeySet keys = t.key_set();
  return reference && t.device().is_cpu() && !keys.has(c10::DispatchKey::Python) &&
         !keys.has(c10::DispatchKey::Functionalize) && !t.unsafeGetTensorImpl()->has_symbolic_sizes_strides();
}

int64_t reference_chunk_rows(int64_t per_row) {
  return per_row <= 0 ? kReferenceChunkElements : std::max<int64_t>(1, kReferenceChunkElements / per_row);
}

at::Tensor empty_like_sizes(const at::Tensor& t, c10::SymIntArrayRef sizes) {
  return at::empty_symint(sizes, t.options());
}

}  // namespace longattn::ops
