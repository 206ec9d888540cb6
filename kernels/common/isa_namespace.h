// Every hot kernel source is compiled once per instruction-set level (kernels/CMakeLists.txt),
// with LONGATTN_ISA_NS naming the level (portable, avx2, avx512, neon). The functions of such a
// source, and the inline helpers of the headers it includes, live in an inline namespace of
// that name: their symbols differ per level, so one binary holds every level without one
// level's code standing in for another's, while code inside still reads them as
// longattn::kernels::X. Types shared with callers (params structs, views) stay outside it, so
// one table of function pointers (kernels/dispatch) serves every level.
// Compiled without LONGATTN_ISA_NS (the torch binding, the dispatcher), the same headers declare
// the dispatching functions of longattn::kernels.
#pragma once

#if defined(LONGATTN_ISA_NS)
#define LONGATTN_ISA_BEGIN inline namespace LONGATTN_ISA_NS {
#define LONGATTN_ISA_END }
#else
#define LONGATTN_ISA_BEGIN
#define LONGATTN_ISA_END
#endif
