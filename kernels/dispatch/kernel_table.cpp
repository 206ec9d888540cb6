// The table of this level's kernels (this file is compiled once per level, as the kernels are;
// the names below resolve to the level's own functions through its inline namespace).
#include "kernels/dispatch/kernel_table.h"

#define LONGATTN_CAT_(a, b) a##b
#define LONGATTN_CAT(a, b) LONGATTN_CAT_(a, b)

namespace longattn::kernels::dispatch {

namespace {
template <class T>
TypedKernels<T> typed_kernels() {
  TypedKernels<T> t;
#define LONGATTN_TABLE_ENTRY(name) t.name = &name<T>;
  LONGATTN_KERNEL_TEMPLATES(LONGATTN_TABLE_ENTRY)
#undef LONGATTN_TABLE_ENTRY
  return t;
}

KernelTable make_table() {
  KernelTable t;
  t.level = Isa::LONGATTN_ISA_NS;
  t.f32 = typed_kernels<float>();
  t.f64 = typed_kernels<double>();
#define LONGATTN_TABLE_ENTRY(name) t.name = &name;
  LONGATTN_KERNEL_FUNCTIONS(LONGATTN_TABLE_ENTRY)
#undef LONGATTN_TABLE_ENTRY
  return t;
}
}  // namespace

const KernelTable& LONGATTN_CAT(kernel_table_, LONGATTN_ISA_NS)() {
  static const KernelTable table = make_table();
  return table;
}

}  // namespace longattn::kernels::dispatch
