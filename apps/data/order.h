// The order in which training examples are visited, as a pure function of (seed, step), so a run
// resumed at step s sees exactly the batches an uninterrupted run would.
//
// Each epoch is its own shuffle (Fisher-Yates with std::mt19937_64 seeded from seed and the epoch);
// batches never straddle epochs; an epoch's last partial batch is dropped when the split holds at
// least one full batch (otherwise every step is the whole split).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace longattn::data {

class EpochOrder {
 public:
  EpochOrder(size_t n, int64_t batch, uint64_t seed);
  int64_t steps_per_epoch() const { return steps_per_epoch_; }
  // The example indices of training step `step` (0-based).
  std::vector<size_t> batch(int64_t step);

 private:
  size_t n_;
  int64_t batch_, steps_per_epoch_;
  uint64_t seed_;
  int64_t cached_epoch_ = -1;
  std::vector<size_t> perm_;
};

}  // namespace longattn::data
