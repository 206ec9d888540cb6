// The run-time dispatch of the kernels: one table of function pointers per instruction-set
// level compiled in, filled by kernel_table.cpp (compiled once per level, like every hot kernel
// source), read by dispatch.cpp, which defines the public kernel functions of longattn::kernels
// as calls through the table of the active level (kernels/common/cpu_features.h).
// Adding a kernel function: a line in LONGATTN_KERNEL_TEMPLATES (or _FUNCTIONS) and its
// forwarding definition in dispatch.cpp.
#pragma once
#include "kernels/common/cpu_features.h"
#include "kernels/dropout/dropout.h"
#include "kernels/kernelized_attention/feature_maps.h"
#include "kernels/kernelized_attention/kernelized_attention.h"
#include "kernels/kernelized_rpe/kernelized_rpe.h"
#include "kernels/shatter/shatter.h"
#include "kernels/softmax_attention/softmax_attention.h"
#include "kernels/toeplitz/toeplitz.h"
#include "kernels/yoso/yoso.h"

// Kernel function templates, instantiated for float and double.
#define LONGATTN_KERNEL_TEMPLATES(X)                                                   \
  X(softmax_attention_forward) X(softmax_attention_backward)                         \
  X(kernelized_attention_forward) X(kernelized_attention_backward)                   \
  X(feature_map_forward) X(feature_map_backward)                                     \
  X(kernelized_rpe_forward) X(kernelized_rpe_backward)                               \
  X(shatter_forward) X(shatter_backward)                                             \
  X(toeplitz_forward) X(toeplitz_backward) X(toeplitz2d_forward) X(toeplitz2d_backward) \
  X(yoso_hash) X(yoso_forward) X(yoso_backward_lsh) X(yoso_backward_exact)           \
  X(yoso_expectation_forward) X(yoso_expectation_backward)                           \
  X(dropout_apply)

// Plain kernel functions.
#define LONGATTN_KERNEL_FUNCTIONS(X) \
  X(dropout_threshold) X(dropout_scale) X(dropout_mask) X(toeplitz_choose_path)

namespace longattn::kernels::dispatch {

// The pointer types are those of the declarations (which name only types shared by every
// level), so one struct serves every level.
template <class T>
struct TypedKernels {
#define LONGATTN_TABLE_FIELD(name) decltype(&::longattn::kernels::name<T>) name;
  LONGATTN_KERNEL_TEMPLATES(LONGATTN_TABLE_FIELD)
#undef LONGATTN_TABLE_FIELD
};

struct KernelTable {
  Isa level;
  TypedKernels<float> f32;
  TypedKernels<double> f64;
#define LONGATTN_TABLE_FIELD(name) decltype(&::longattn::kernels::name) name;
  LONGATTN_KERNEL_FUNCTIONS(LONGATTN_TABLE_FIELD)
#undef LONGATTN_TABLE_FIELD
};

// One per level compiled in (kernel_table.cpp); the only symbols a level's code exports.
#define LONGATTN_DECLARE_TABLE(level) \
  __attribute__((visibility("default"))) const KernelTable& kernel_table_##level();
LONGATTN_DECLARE_TABLE(portable)
LONGATTN_DECLARE_TABLE(neon)
LONGATTN_DECLARE_TABLE(avx2)
LONGATTN_DECLARE_TABLE(avx512)
#undef LONGATTN_DECLARE_TABLE

// The table of the active level.
const KernelTable& active_table();

template <class T>
const TypedKernels<T>& active_kernels();

}  // namespace longattn::kernels::dispatch
