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

}  // namespace longattn::nn
