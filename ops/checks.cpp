#include "ops/checks.h"

#include <c10/util/Exception.h>

namespace longattn::ops {

std::string shape_str(c10::SymIntArrayRef sizes) {
  std::ostringstream s;
  s << "[";
  for (size_t i = 0; i < sizes.size(); ++i) s << (i ? ", " : "") << sizes[i];
  s << "]";
  return s.str();
}

std::string str(const c10::SymInt& n) {
  std::ostringstream s;
  s << n;
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
      << " with shape " << shape_str(t.sym_sizes());
    fail(op, s.str());
  }
}

void check_shape(const char* op, const char* name, const at::Tensor& t,
                 const std::vector<c10::SymInt>& want, const char* layout) {
  bool ok = t.dim() == static_cast<int64_t>(want.size());
  for (size_t d = 0; ok && d < want.size(); ++d) {
    const auto fixed = want[d].maybe_as_int();
    ok = (fixed && *fixed < 0) || t.sym_size(static_cast<int64_t>(d)) == want[d];
  }
  if (!ok) {
    std::ostringstream s;
    s << name << " must have shape " << layout << " = [";
    for (size_t d = 0; d < want.size(); ++d) {
      s << (d ? ", " : "");
      const auto fixed = want[d].maybe_as_int();
      if (fixed && *fixed < 0) s << "*"; else s << want[d];
    }
    s << "], got " << shape_str(t.sym_sizes());
    fail(op, s.str());
  }
}

void check_float_dtype(const char* op, const char* name, const at::Tensor& t) {
  const at::ScalarType d = t.scalar_type();
  if (d != at::kFloat && d != at::kDouble && d != at::kBFloat16 && d != at::kHalf) {
    std::ostringstream s;
    s << name << " must be float32, float64, bfloat16 or float16, got " << d;
    fail(op, s.str());
  }
}

namespace {

void check_same_device(const char* op, const char* ref_name, const at::Tensor& ref, const char* name,
                       const at::Tensor& t) {
  if (t.device() != ref.device()) {
    std::ostringstream s;
    s << name << " must be on the device of " << ref_name << " (" << ref.device() << "), got "
      << t.device();
    fail(op, s.str());
  }
}

}  // namespace

void check_same_dtype_device(const char* op, const char* ref_name, const at::Tensor& ref,
                             const char* name, const at::Tensor& t) {
  if (t.scalar_type() != ref.scalar_type()) {
    std::ostringstream s;
    s << name << " must have the dtype of " << ref_name << " (" << ref.scalar_type() << "), got "
      << t.scalar_type();
    fail(op, s.str());
  }
  check_same_device(op, ref_name, ref, name, t);
}

void check_param_dtype_device(const char* op, const char* ref_name, const at::Tensor& ref,
                              const char* name, const at::Tensor& t) {
  const bool half_ref = ref.scalar_type() == at::kBFloat16 || ref.scalar_type() == at::kHalf;
  if (t.scalar_type() != ref.scalar_type() && !(half_ref && t.scalar_type() == at::kFloat)) {
    std::ostringstream s;
    s << name << " must have the dtype of " << ref_name << " (" << ref.scalar_type() << ")"
      << (half_ref ? " or float32" : "") << ", got " << t.scalar_type();
    fail(op, s.str());
  }
  check_same_device(op, ref_name, ref, name, t);
}

void check_cpu(const char* op, const at::Tensor& t) {
  // Meta tensors (torch.compile's fake tensors, shape inference) carry no data to compute on
  // but describe CPU computations; they pass.
  if (!t.device().is_cpu() && !t.device().is_meta())
    fail(op, "only CPU tensors are supported in this build, got " + t.device().str());
}

void check_key_padding_mask(const char* op, const at::Tensor& mask, const c10::SymInt& B,
                            const c10::SymInt& N) {
  if (mask.scalar_type() != at::kBool) {
    std::ostringstream s;
    s << "key_padding_mask must be bool [B, Nk] (True = the key takes part), got dtype "
      << mask.scalar_type();
    fail(op, s.str());
  }
  check_shape(op, "key_padding_mask", mask, {B, N}, "[B, Nk]");
}

void check_square(const char* op, const char* what, const c10::SymInt& Nq, const c10::SymInt& Nk) {
  if (Nq != Nk)
    fail(op, std::string(what) + " needs Nq == Nk, got Nq = " + str(Nq) + " and Nk = " + str(Nk));
}

c10::SymInt offsets_len(const c10::SymInt& N) {
  return N == 0 ? c10::SymInt(0) : 2 * N - 1;
}

at::Tensor last_dim_contiguous(const at::Tensor& t) {
  if (t.dim() == 0 || t.sym_stride(-1) == 1 || t.sym_size(-1) <= 1) return t;
  return t.contiguous();
}

}  // namespace longattn::ops
