// Threading for the kernels: OpenMP with an explicit thread count, so the caller
// (the torch binding passes at::get_num_threads()) decides, never a global default.
#pragma once
#include <cstdint>
#include <omp.h>

namespace longattn::kernels {

// The thread count a kernel uses: `threads` if positive, else OpenMP's default.
inline int resolve_threads(int threads) { return threads > 0 ? threads : omp_get_max_threads(); }

// Runs f(i) for i in [0, n) on `threads` threads (<= 0: OpenMP's default).
// Dynamic scheduling, because the work items of attention kernels are uneven
// (causal blocks, masked rows).
template <class F>
void parallel_for(int64_t n, int threads, F&& f) {
  if (n <= 0) return;
  threads = resolve_threads(threads);
  if (threads == 1 || n == 1) {
    for (int64_t i = 0; i < n; ++i) f(i);
    return;
  }
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
  for (int64_t i = 0; i < n; ++i) f(i);
}

// Index of the calling thread inside parallel_for (0 outside), for per-thread scratch.
inline int thread_index() { return omp_get_thread_num(); }

}  // namespace longattn::kernels
