// Shatter (docs/shatter.md): the layer against a multi-head softmax layer of the same width
// (torch's SDPA), and the operator against single-head softmax attention.
#include <torch/torch.h>

#include "bench/registry.h"
#include "nn/shatter.h"
#include "longattn/shatter.h"
#include "longattn/softmax_attention.h"

namespace longattn::bench {
namespace {

// ---- layers: model width E = s.H * s.D, P parts ----

struct LayerInputs {
  at::Tensor x, grad_out;
};

LayerInputs layer_inputs(const Shape& s) {
  const int64_t E = s.H * s.D;
  return {randn({s.B, s.N, E}, s, true), randn({s.B, s.N, E}, s)};
}

template <class Module, class F>
Runner layer_runner(const Shape& s, Module m, LayerInputs in, F f) {
  Runner r;
  r.forward = [m, in, f] {
    torch::NoGradGuard ng;
    f(m, in.x);
  };
  r.forward_backward = [m, in, f]() mutable {
    f(m, in.x).backward(in.grad_out);
    m->zero_grad(true);
    clear_grads({in.x});
  };
  double params = 0;
  for (auto& p : m->parameters()) params += bytes_of(p);
  r.output_bytes_forward = bytes_of(in.x);
  r.output_bytes_backward = bytes_of(in.x) + params;
  (void)s;
  return r;
}

std::optional<Runner> make_shatter_layer(const Shape& s, std::string&) {
  const int64_t E = s.H * s.D, P = int64_t(s.get("P", 4));
  nn::Shatter m(nn::ShatterOptions(E).num_parts(P).qk_dim(s.D).causal(s.causal));
  m->to(s.dtype);
  return layer_runner(s, m, layer_inputs(s), [](nn::Shatter m, const at::Tensor& x) { return m->forward(x); });
}

// What a PyTorch user writes for multi-head attention: one in-projection, SDPA, out-projection.
struct MultiHeadImpl : torch::nn::Module {
  MultiHeadImpl(int64_t E, int64_t H, bool causal) : H(H), causal(causal) {
    in_proj = register_module("in_proj", torch::nn::Linear(E, 3 * E));
    out_proj = register_module("out_proj", torch::nn::Linear(E, E));
  }
  at::Tensor forward(const at::Tensor& x) {
    const int64_t B = x.size(0), N = x.size(1), E = x.size(2);
    auto qkv = in_proj(x).view({B, N, 3, H, E / H}).permute({2, 0, 3, 1, 4});  // [3, B, H, N, Dh]
    auto o = at::scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], c10::nullopt, 0.0, causal);
    return out_proj(o.transpose(1, 2).reshape({B, N, E}));
  }
  int64_t H;
  bool causal;
  torch::nn::Linear in_proj{nullptr}, out_proj{nullptr};
};
TORCH_MODULE(MultiHead);

std::optional<Runner> make_mha_layer(const Shape& s, std::string&) {
  MultiHead m(s.H * s.D, s.H, s.causal);
  m->to(s.dtype);
  return layer_runner(s, m, layer_inputs(s), [](MultiHead m, const at::Tensor& x) { return m->forward(x); });
}

std::vector<Shape> layer_grid(bool quick) {
  std::vector<Shape> g;
  for (int64_t n : quick ? std::vector<int64_t>{512} : std::vector<int64_t>{512, 2048}) {
    Shape s;  // model width 512 = 8 heads of 64 for the baseline; Shatter: one head of 64, P = 4
    s.B = 8, s.H = 8, s.D = 64, s.N = n;
    s.extra = {{"P", 4}};
    g.push_back(s);
  }
  return g;
}

RegisterSuite reg_layer({"shatter_layer",
                         "Shatter layer (width H*D, one head of D, P parts) vs multi-head softmax layer (torch SDPA)",
                         layer_grid,
                         {{"longattn.nn.Shatter", false, make_shatter_layer},
                          {"torch.multihead_sdpa", true, make_mha_layer}}});

// ---- operators: one head of D; Shatter with P parts of Dv each ----

Runner op_runner(at::Tensor grad_out, std::vector<at::Tensor> leaves, std::function<at::Tensor()> f) {
  Runner r;
  r.forward = [f] {
    torch::NoGradGuard ng;
    f();
  };
  r.forward_backward = [f, grad_out, leaves] {
    f().backward(grad_out);
    for (auto t : leaves) t.mutable_grad() = at::Tensor();
  };
  double in_bytes = 0;
  for (auto& t : leaves) in_bytes += bytes_of(t);
  r.output_bytes_forward = bytes_of(grad_out);
  r.output_bytes_backward = bytes_of(grad_out) + in_bytes;
  return r;
}

std::optional<Runner> make_shatter_op(const Shape& s, int64_t Dv) {
  const int64_t P = int64_t(s.get("P", 4));
  auto q = randn({s.B, s.N, s.D}, s, true), k = randn({s.B, s.N, s.D}, s, true);
  auto v = randn({s.B, P, s.N, Dv}, s, true);
  auto part = torch::softmax(randn({P, 2 * s.N - 1}, s), 0).set_requires_grad(true);
  ShatterAttentionOptions o;
  o.causal = s.causal;
  Runner r = op_runner(randn({s.B, s.N, Dv}, s), {q, k, v, part},
                       [=] { return shatter_attention(q, k, v, part, o); });
  const double nn = double(s.B) * s.N * s.N * (s.causal ? 0.5 : 1.0);
  r.flops_forward = 2 * nn * (s.D + P * Dv);
  r.flops_backward = 2 * nn * (3 * s.D + 2 * P * Dv);
  return r;
}

std::optional<Runner> make_softmax_op(const Shape& s, std::string&) {
  auto q = randn({s.B, 1, s.N, s.D}, s, true), k = randn({s.B, 1, s.N, s.D}, s, true);
  auto v = randn({s.B, 1, s.N, s.D}, s, true);
  SoftmaxAttentionOptions o;
  o.causal = s.causal;
  Runner r = op_runner(randn({s.B, 1, s.N, s.D}, s), {q, k, v}, [=] { return softmax_attention(q, k, v, o); });
  r.flops_forward = attention_flops(s, s.N, s.N, s.D) / s.H;
  r.flops_backward = 2.5 * r.flops_forward;
  return r;
}

// torch's fused SDPA on the same single head.
std::optional<Runner> make_sdpa_op(const Shape& s, std::string&) {
  auto q = randn({s.B, 1, s.N, s.D}, s, true), k = randn({s.B, 1, s.N, s.D}, s, true);
  auto v = randn({s.B, 1, s.N, s.D}, s, true);
  const bool causal = s.causal;
  Runner r = op_runner(randn({s.B, 1, s.N, s.D}, s), {q, k, v}, [=] {
    return at::scaled_dot_product_attention(q, k, v, {}, 0.0, causal);
  });
  r.flops_forward = attention_flops(s, s.N, s.N, s.D) / s.H;
  r.flops_backward = 2.5 * r.flops_forward;
  return r;
}

std::vector<Shape> op_grid(bool quick) {
  Shape s;
  s.B = 1, s.H = 1, s.D = 64, s.N = quick ? 2048 : 4096;
  s.extra = {{"P", 4}};
  return {s};
}

RegisterSuite reg_op({"shatter_op",
                      "shatter_attention (one head of D = 64, P = 4) vs single-head softmax_attention",
                      op_grid,
                      {{"longattn.shatter_attention[Dv=D]", false,
                        [](const Shape& s, std::string&) { return make_shatter_op(s, s.D); }},
                       {"longattn.shatter_attention[Dv=D/P]", false,
                        [](const Shape& s, std::string&) { return make_shatter_op(s, s.D / int64_t(s.get("P", 4))); }},
                       {"longattn.softmax_attention[H=1]", true, make_softmax_op},
                       {"torch.sdpa[H=1]", true, make_sdpa_op}}});

}  // namespace
}  // namespace longattn::bench
