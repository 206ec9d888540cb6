// Exact attention: longattn.softmax_attention against torch's fused SDPA and the composite a
// PyTorch user writes (matmul, add a materialised bias, softmax, matmul).
#include <torch/torch.h>

#include <cmath>

#include "bench/registry.h"
#include "longattn/softmax_attention.h"

namespace longattn::bench {
namespace {

struct Inputs {
  at::Tensor q, k, v, bias, grad_out;
};

Inputs make_inputs(const Shape& s) {
  Inputs in;
  in.q = randn({s.B, s.H, s.N, s.D}, s, true);
  in.k = randn({s.B, s.H, s.N, s.D}, s, true);
  in.v = randn({s.B, s.H, s.N, s.D}, s, true);
  if (s.rel_bias) in.bias = (0.1 * randn({s.H, 2 * s.N - 1}, s)).set_requires_grad(true);
  in.grad_out = randn({s.B, s.H, s.N, s.D}, s);
  return in;
}

// [H, N, N] materialised bias gathered from the [H, 2N-1] vector, as a user would.
at::Tensor materialise_bias(const at::Tensor& bias, int64_t N) {
  auto i = at::arange(N, at::kLong);
  auto idx = i.unsqueeze(0) - i.unsqueeze(1) + (N - 1);  // [N, N], j - i + N - 1
  return bias.index_select(1, idx.reshape(-1)).reshape({bias.size(0), N, N});
}

Runner finish(const Shape& s, Inputs in, std::function<at::Tensor(const Inputs&)> f) {
  Runner r;
  r.forward = [in, f] { f(in); };
  r.forward_backward = [in, f] {
    auto out = f(in);
    out.backward(in.grad_out);
    clear_grads({in.q, in.k, in.v, in.bias});
  };
  r.flops_forward = attention_flops(s, s.N, s.N, s.D);
  r.flops_backward = 2.5 * r.flops_forward;
  double t = bytes_of(in.q);
  r.output_bytes_forward = t;
  r.output_bytes_backward = t + 3 * t + (in.bias.defined() ? bytes_of(in.bias) : 0);
  return r;
}

std::optional<Runner> make_longattn(const Shape& s, std::string&) {
  Inputs in = make_inputs(s);
  return finish(s, in, [causal = s.causal](const Inputs& x) {
    SoftmaxAttentionOptions o;
    o.causal = causal;
    if (x.bias.defined()) o.rel_bias = x.bias;
    return softmax_attention(x.q, x.k, x.v, o);
  });
}

double dense_bytes(const Shape& s) { return double(s.B) * s.H * s.N * s.N * double(c10::elementSize(s.dtype)); }

std::optional<Runner> make_sdpa(const Shape& s, std::string& why) {
  if (s.rel_bias && 3 * dense_bytes(s) > max_case_bytes()) {
    why = "the materialised bias needs " + std::to_string(int(3 * dense_bytes(s) / (1 << 30))) + " GiB";
    return std::nullopt;
  }
  Inputs in = make_inputs(s);
  return finish(s, in, [causal = s.causal, N = s.N](const Inputs& x) {
    c10::optional<at::Tensor> mask;
    if (x.bias.defined()) {
      auto b = materialise_bias(x.bias, N);
      if (causal) b = b.masked_fill(at::ones({N, N}, at::kBool).triu(1), -INFINITY);
      mask = b.unsqueeze(0);
    }
    return at::scaled_dot_product_attention(x.q, x.k, x.v, mask, 0.0, causal && !mask);
  });
}

std::optional<Runner> make_composite(const Shape& s, std::string& why) {
  if (4 * dense_bytes(s) > max_case_bytes()) {
    why = "the N×N score tensors need " + std::to_string(int(4 * dense_bytes(s) / (1 << 30))) + " GiB";
    return std::nullopt;
  }
  Inputs in = make_inputs(s);
  return finish(s, in, [causal = s.causal, N = s.N, D = s.D](const Inputs& x) {
    auto scores = at::matmul(x.q, x.k.transpose(-2, -1)) * (1.0 / std::sqrt(double(D)));
    if (x.bias.defined()) scores = scores + materialise_bias(x.bias, N).unsqueeze(0);
    if (causal) scores = scores.masked_fill(at::ones({N, N}, at::kBool).triu(1), -INFINITY);
    return at::matmul(at::softmax(scores, -1), x.v);
  });
}

std::vector<Shape> grid(bool quick) {
  std::vector<Shape> g;
  for (int64_t n : quick ? std::vector<int64_t>{512, 1024, 2048} : std::vector<int64_t>{1024, 4096, 16384})
    for (bool causal : {false, true})
      for (bool bias : {false, true}) {
        Shape s;
        s.N = n, s.causal = causal, s.rel_bias = bias;
        g.push_back(s);
      }
  return g;
}

RegisterSuite reg({"softmax",
                   "exact attention: fused longattn vs torch SDPA vs the matmul-softmax composite",
                   grid,
                   {{"longattn.softmax_attention", false, make_longattn},
                    {"torch.sdpa", true, make_sdpa},
                    {"torch.composite", true, make_composite}}});

}  // namespace
}  // namespace longattn::bench
