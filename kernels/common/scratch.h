// Scratch memory for the kernels: aligned, uninitialised, growable, allocated once per call or
// per thread and never inside loops.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>
#ifdef __linux__
#include <sys/mman.h>
#endif

#include "kernels/common/isa_namespace.h"

namespace longattn::kernels {
LONGATTN_ISA_BEGIN

constexpr size_t kCacheLine = 64;
constexpr size_t kHugePage = size_t(2) << 20;

// Align: 64 (a cache line) for ordinary scratch; kHugePage for arrays touched in random order
// (the YOSO hash tables), which are then advised to use transparent huge pages, since with
// 4 KiB pages nearly every touch of a large array would also miss the TLB.
template <class T, size_t Align = kCacheLine>
class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  explicit AlignedBuffer(int64_t count) { resize(count); }
  // Grows to at least `count` elements; never shrinks. Contents are unspecified after growing.
  T* resize(int64_t count) {
    if (count <= size_) return data();
    const size_t bytes = (static_cast<size_t>(count) * sizeof(T) + Align - 1) / Align * Align;
    void* p = std::aligned_alloc(Align, bytes);
    if (p == nullptr) throw std::bad_alloc();
#ifdef __linux__
    if constexpr (Align >= kHugePage) madvise(p, bytes, MADV_HUGEPAGE);
#endif
    ptr_.reset(static_cast<T*>(p));
    size_ = static_cast<int64_t>(bytes / sizeof(T));
    return data();
  }
  T* data() const { return ptr_.get(); }
  int64_t size() const { return size_; }

 private:
  struct Free {
    void operator()(T* p) const { std::free(p); }
  };
  std::unique_ptr<T, Free> ptr_;
  int64_t size_ = 0;
};

template <class T>
using HugePageBuffer = AlignedBuffer<T, kHugePage>;

LONGATTN_ISA_END
}  // namespace longattn::kernels
