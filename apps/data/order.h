// The order in which training examples are visited, as a pure function of (seed, step), so a run
// resumed at step s sees exactly the batches an uninterrupted run would.
//
// Each epoch is its own shuffle (Fisher-Yates with std::mt19937_64 seeded from seed and the epoch);
// batches never straddle epochs; an epoch's last partial batch is dropped when the split holds at
// least one full batch (otherwise every step is the whole split).
//
// Length bucketing (bucket > 1): the epoch's shuffle is cut into pools of bucket × batch examples,
// each pool is sorted by length and cut into batches, and the epoch's batches are shuffled again.
// A batch is then padded to a length close to its own examples' (ListOps at LRA's lengths: a
// random batch of 32 pads to ~1,900 tokens for a mean of ~1,030), while every example is still
// seen once per epoch and the batches' order stays random. The second shuffle is a pure function
// of (seed, epoch) too.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace longattn::data {

class EpochOrder {
 public:
  EpochOrder(size_t n, int64_t batch, uint64_t seed);
  // lengths[i]: the length of example i (its padded cost); bucket: batches per sorted pool (1: off).
  EpochOrder(size_t n, int64_t batch, uint64_t seed, int64_t bucket, std::vector<int64_t> lengths);
  int64_t steps_per_epoch() const { return steps_per_epoch_; }
  // The example indices of training step `step` (0-based).
  std::vector<size_t> batch(int64_t step);

 private:
  void shuffle_epoch(int64_t epoch);

  size_t n_;
  int64_t batch_, steps_per_epoch_;
  uint64_t seed_;
  int64_t bucket_ = 1;
  std::vector<int64_t> lengths_;
  int64_t cached_epoch_ = -1;
  std::vector<size_t> perm_;
  std::vector<int64_t> batch_order_;  // bucketing: the epoch's batches in visiting order
};

}  // namespace longattn::data
