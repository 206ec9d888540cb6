// Dropout for the encoder on longattn::dropout (counter-based mask, nothing stored for the
// backward; see kernels/dropout/dropout.h). In training each call draws its mask's seed from
// torch's default CPU generator, so torch::manual_seed makes runs repeatable and a checkpoint
// of the generator state (the trainer keeps one) resumes the same masks. In eval mode, or with
// p = 0, it is the identity.
#pragma once

#include <torch/torch.h>

namespace longattn::nn {

class DropoutImpl : public torch::nn::Cloneable<DropoutImpl> {
 public:
  explicit DropoutImpl(double p = 0.5);
  void reset() override {}
  torch::Tensor forward(const torch::Tensor& x);
  double p() const { return p_; }

 private:
  double p_;
};
TORCH_MODULE(Dropout);

// Data-parallel training: while a guard lives, the rows (dim 0) of every tensor Dropout sees are
// rows `first`, `first` + 1, ... of the global batch, and each gets the mask that row gets when one
// process runs the whole batch (same seed draw, element index shifted by first x elements per row).
// Why: with per-process masks drawn as if each shard were the whole batch, N processes would train a
// different model than one process on the combined batch. Exact when the elements per row are a
// multiple of 4 (the kernel draws 4 lanes per counter); otherwise forward throws.
class DropoutRowOffset {
 public:
  explicit DropoutRowOffset(int64_t first);
  ~DropoutRowOffset();
  DropoutRowOffset(const DropoutRowOffset&) = delete;
  DropoutRowOffset& operator=(const DropoutRowOffset&) = delete;

 private:
  int64_t previous_;
};

}  // namespace longattn::nn
