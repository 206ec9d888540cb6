#include "ops/checks.h"

#include <c10/util/Exception.h>

namespace longattn::ops {

std::string shape_str(at::IntArrayRef sizes) {
  std::ostringstream s;
  s << "[";
  for (size_t i = 0; i < sizes.size(); ++i) s << (i ? ", " : "") << sizes[i];
  s << "]";
  return s.str();
}

void fail(const char* op, const std::string& message) {
  TORCH_CHECK(false, "longattn.", op, ": ", message);
}

void check_rank(const char* op, const char* name, const at::Tensor& t, int64_t rank,
                const char* layout) {
  if (t.dim() != rank) {
    std::ostringstream s;
    s << name << " must have " << rank << " dimensions " << layout << ", got " << t.dim()
      << " with shape " << shape_str(t.sizes());
    fail(op, s.str());
  }
}

void check_shape(const char* op, const char* name, const at::Tensor& t,
                 const std::vector<int64_t>& want, const char* layout) {
  bool ok = t.dim() == static_cast<int64_t>(want.size());
  for (size_t d = 0; ok && d < want.size(); ++d) ok = want[d] < 0 || t.size(d) == want[d];
  if (!ok) {
    std::ostringstream s;
    s << name << " must have shape " << layout << " = [";
    for (size_t d = 0; d < want.size(); ++d) {
      s << (d ? ", " : "");
      if (want[d] < 0) s << "*"; else s << want[d];
    }
    s << "], got " << shape_str(t.sizes());
    fail(op, s.str());
  }
}

void check_float_dtype(const char* op, const char* name, const at::Tensor& t) {
  if (t.scalar_type() != at::kFloat && t.scalar_type() != at::kDouble) {
    std::ostringstream s;
    s << name << " must be float32 or float64, got " << t.scalar_type();
    fail(op, s.str());
  }
}

void check_same_dtype_device(const char* op, const char* ref_name, const at::Tensor& ref,
                             const char* name, const at::Tensor& t) {
  if (t.scalar_type() != ref.scalar_type()) {
    std::ostringstream s;
    s << name << " must have the dtype of " << ref_name << " (" << ref.scalar_type() << "), got "
      << t.scalar_type();
    fail(op, s.str());
  }
  if (t.device() != ref.device()) {
    std::ostringstream s;
    s << name << " must be on the device of " << ref_name << " (" << ref.device() << "), got "
      << t.device();
    fail(op, s.str());
  }
}

void check_key_padding_mask(const char* op, const at::Tensor& mask, int64_t B, int64_t N) {
  if (mask.scalar_type() != at::kBool) {
    std::ostringstream s;
    s << "key_padding_mask must be bool [B, Nk] (True = the key takes part), got dtype "
      << mask.scalar_type();
    fail(op, s.str());
  }
  check_shape(op, "key_padding_mask", mask, {B, N}, "[B, Nk]");
}

at::Tensor last_dim_contiguous(const at::Tensor& t) {
  if (t.dim() == 0 || t.stride(-1) == 1 || t.size(-1) <= 1) return t;
  return t.contiguous();
}

}  // namespace longattn::ops
