#include "apps/data/order.h"

#include <algorithm>
#include <numeric>
#include <stdexcept>
#include <string>

#include "apps/data/rng.h"

namespace longattn::data {

namespace {

// splitmix-style mixing keeps nearby (seed, epoch, stream) triples from giving related streams
Rng epoch_rng(uint64_t seed, int64_t epoch, uint64_t stream) {
  uint64_t z = seed + 0x9E3779B97F4A7C15ull * uint64_t(epoch + 1) + 0xD1B54A32D192ED03ull * stream;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return Rng(z ^ (z >> 31));
}

template <class T>
void fisher_yates(std::vector<T>& v, Rng& rng) {
  for (size_t i = v.size(); i-- > 1;) std::swap(v[i], v[size_t(randint(rng, 0, int64_t(i)))]);
}

}  // namespace

EpochOrder::EpochOrder(size_t n, int64_t batch, uint64_t seed) : EpochOrder(n, batch, seed, 1, {}) {}

EpochOrder::EpochOrder(size_t n, int64_t batch, uint64_t seed, int64_t bucket, std::vector<int64_t> lengths)
    : n_(n), batch_(batch), seed_(seed), bucket_(bucket), lengths_(std::move(lengths)) {
  if (n == 0) throw std::invalid_argument("EpochOrder: the training split is empty");
  if (batch < 1) throw std::invalid_argument("EpochOrder: batch size must be at least 1, got " + std::to_string(batch));
  if (bucket < 1) throw std::invalid_argument("EpochOrder: bucket must be at least 1 (1: no length bucketing), got " + std::to_string(bucket));
  if (bucket > 1 && lengths_.size() != n)
    throw std::invalid_argument("EpochOrder: length bucketing needs one length per example (" + std::to_string(n) +
                                "), got " + std::to_string(lengths_.size()));
  steps_per_epoch_ = std::max<int64_t>(1, int64_t(n) / batch);
}

void EpochOrder::shuffle_epoch(int64_t epoch) {
  perm_.resize(n_);
  std::iota(perm_.begin(), perm_.end(), size_t(0));
  Rng rng = epoch_rng(seed_, epoch, 0);
  fisher_yates(perm_, rng);
  batch_order_.clear();
  if (bucket_ > 1 && int64_t(n_) >= batch_) {
    const size_t used = size_t(steps_per_epoch_ * batch_);  // the dropped partial batch stays out
    const size_t pool = size_t(bucket_ * batch_);
    for (size_t b = 0; b < used; b += pool) {
      // stable: equal lengths keep their shuffled order, so the result is the same on every libstdc++
      std::stable_sort(perm_.begin() + long(b), perm_.begin() + long(std::min(used, b + pool)),
                       [&](size_t x, size_t y) { return lengths_[x] < lengths_[y]; });
    }
    batch_order_.resize(size_t(steps_per_epoch_));
    std::iota(batch_order_.begin(), batch_order_.end(), int64_t(0));
    Rng brng = epoch_rng(seed_, epoch, 1);
    fisher_yates(batch_order_, brng);
  }
  cached_epoch_ = epoch;
}

std::vector<size_t> EpochOrder::batch(int64_t step) {
  const int64_t epoch = step / steps_per_epoch_;
  if (epoch != cached_epoch_) shuffle_epoch(epoch);
  int64_t within = step % steps_per_epoch_;
  if (!batch_order_.empty()) within = batch_order_[size_t(within)];
  const size_t begin = size_t(within * batch_);
  const size_t end = std::min(n_, begin + size_t(batch_));
  return std::vector<size_t>(perm_.begin() + long(begin), perm_.begin() + long(end));
}

}  // namespace longattn::data
