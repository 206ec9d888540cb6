#include "apps/data/order.h"

#include <algorithm>
#include <numeric>
#include <stdexcept>
#include <string>

#include "apps/data/rng.h"

namespace longattn::data {

EpochOrder::EpochOrder(size_t n, int64_t batch, uint64_t seed) : n_(n), batch_(batch), seed_(seed) {
  if (n == 0) throw std::invalid_argument("EpochOrder: the training split is empty");
  if (batch < 1) throw std::invalid_argument("EpochOrder: batch size must be at least 1, got " + std::to_string(batch));
  steps_per_epoch_ = std::max<int64_t>(1, int64_t(n) / batch);
}

std::vector<size_t> EpochOrder::batch(int64_t step) {
  const int64_t epoch = step / steps_per_epoch_;
  if (epoch != cached_epoch_) {
    perm_.resize(n_);
    std::iota(perm_.begin(), perm_.end(), size_t(0));
    // splitmix-style mixing keeps nearby (seed, epoch) pairs from giving related streams
    uint64_t z = seed_ + 0x9E3779B97F4A7C15ull * uint64_t(epoch + 1);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    Rng rng(z ^ (z >> 31));
    for (size_t i = n_ - 1; i > 0; --i) std::swap(perm_[i], perm_[size_t(randint(rng, 0, int64_t(i)))]);
    cached_epoch_ = epoch;
  }
  const int64_t within = step % steps_per_epoch_;
  const size_t begin = size_t(within * batch_);
  const size_t end = std::min(n_, begin + size_t(batch_));
  return std::vector<size_t>(perm_.begin() + long(begin), perm_.begin() + long(end));
}

}  // namespace longattn::data
