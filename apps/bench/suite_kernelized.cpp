// Kernelized (linear) attention: longattn.kernelized_attention (elu, sikf, favor with m = 64)
// against the composites a PyTorch user writes: einsum when not causal and cumsum over the
// N x D x Dv outer products when causal (as fast-transformers' and xformers' Python paths do),
// performer-pytorch's FAVOR+ expression, and exact softmax attention.
#include <torch/torch.h>

#include <cmath>

#include "bench/registry.h"
#include "longattn/kernelized_attention.h"
#include "longattn/softmax_attention.h"

namespace longattn::bench {
namespace {

struct Inputs {
  at::Tensor q, k, v, grad_out, projection;
};

Inputs make_inputs(const Shape& s) {
  Inputs in;
  in.q = randn({s.B, s.H, s.N, s.D}, s, true);
  in.k = randn({s.B, s.H, s.N, s.D}, s, true);
  in.v = randn({s.B, s.H, s.N, s.D}, s, true);
  in.grad_out = randn({s.B, s.H, s.N, s.D}, s);
  return in;
}

// Linear attention FLOPs: building S (2 N m Dv) and applying it (2 N m Dv) per head, the
// same count causal or not (the causal chunked form does about twice that in practice).
Runner finish(const Shape& s, Inputs in, int64_t m, std::function<at::Tensor(const Inputs&)> f) {
  Runner r;
  r.forward = [in, f] { f(in); };
  r.forward_backward = [in, f] {
    auto out = f(in);
    out.backward(in.grad_out);
    clear_grads({in.q, in.k, in.v});
  };
  r.flops_forward = 4.0 * s.B * s.H * s.N * m * s.D;
  r.flops_backward = 2.0 * r.flops_forward;
  const double t = bytes_of(in.q);
  r.output_bytes_forward = t;
  r.output_bytes_backward = 4 * t;
  return r;
}

std::function<std::optional<Runner>(const Shape&, std::string&)> longattn_case(
    const std::string& feature_map) {
  return [feature_map](const Shape& s, std::string&) -> std::optional<Runner> {
    Inputs in = make_inputs(s);
    int64_t m = s.D;
    if (feature_map == "favor") {
      m = 64;
      RandomFeaturesOptions ro;
      ro.dtype = s.dtype;
      in.projection = random_features(m, s.D, 1, ro);
    }
    return finish(s, in, m, [feature_map, causal = s.causal](const Inputs& x) {
      KernelizedAttentionOptions o;
      o.causal = causal;
      if (x.projection.defined()) o.projection = x.projection;
      return kernelized_attention(x.q, x.k, x.v, feature_map, o);
    });
  };
}

// elu+1 linear attention as a PyTorch user writes it.
std::optional<Runner> make_composite(const Shape& s, std::string& why) {
  const double elem = double(c10::elementSize(s.dtype));
  // cumsum keeps [B, H, N, D, Dv] twice (the products and their prefix sums) plus gradients.
  const double cumsum_bytes = 4.0 * s.B * s.H * s.N * s.D * s.D * elem;
  if (s.causal && cumsum_bytes > max_case_bytes()) {
    why = "the N×D×Dv prefix sums need " + std::to_string(int(cumsum_bytes / (1 << 30))) + " GiB";
    return std::nullopt;
  }
  Inputs in = make_inputs(s);
  return finish(s, in, s.D, [causal = s.causal](const Inputs& x) {
    auto q = at::elu(x.q) + 1, k = at::elu(x.k) + 1;
    at::Tensor num, den;
    if (causal) {
      auto kv = at::einsum("bhnd,bhne->bhnde", {k, x.v}).cumsum(2);
      num = at::einsum("bhnd,bhnde->bhne", {q, kv});
      den = at::einsum("bhnd,bhnd->bhn", {q, k.cumsum(2)});
    } else {
      auto kv = at::einsum("bhnd,bhne->bhde", {k, x.v});
      num = at::einsum("bhnd,bhde->bhne", {q, kv});
      den = at::einsum("bhnd,bhd->bhn", {q, k.sum(2)});
    }
    return num / (den.unsqueeze(-1) + 1e-6);
  });
}

// FAVOR+ as performer-pytorch writes it (softmax_kernel with the data normaliser, diagonal and
// stabilising max, then linear attention; the causal form by prefix sums, as its non-CUDA path),
// with the same m = 64 orthogonal random features as longattn's case.
std::optional<Runner> make_favor_composite(const Shape& s, std::string& why) {
  const int64_t m = 64;
  const double elem = double(c10::elementSize(s.dtype));
  const double cumsum_bytes = 4.0 * s.B * s.H * s.N * m * s.D * elem;
  if (s.causal && cumsum_bytes > max_case_bytes()) {
    why = "the N×m×Dv prefix sums need " + std::to_string(int(cumsum_bytes / (1 << 30))) + " GiB";
    return std::nullopt;
  }
  Inputs in = make_inputs(s);
  RandomFeaturesOptions ro;
  ro.dtype = s.dtype;
  in.projection = random_features(m, s.D, 1, ro);
  return finish(s, in, m, [causal = s.causal, m](const Inputs& x) {
    const double normalizer = std::pow(double(x.q.size(-1)), -0.25);
    const double ratio = std::pow(double(m), -0.5);
    const double eps = 1e-4;
    auto feature = [&](const at::Tensor& t, bool is_query) {
      auto dash = at::einsum("bhnd,md->bhnm", {t * normalizer, x.projection});
      auto diag = (t * t).sum(-1, true) * (normalizer * normalizer / 2);
      auto stab = is_query ? std::get<0>(dash.max(-1, true)) : dash.amax({-1, -2}, true);
      return ratio * (at::exp(dash - diag - stab.detach()) + eps);
    };
    auto qf = feature(x.q, true), kf = feature(x.k, false);
    if (causal) {
      auto kv = at::einsum("bhnm,bhne->bhnme", {kf, x.v}).cumsum(2);
      auto num = at::einsum("bhnm,bhnme->bhne", {qf, kv});
      auto den = at::einsum("bhnm,bhnm->bhn", {qf, kf.cumsum(2)});
      return num / den.unsqueeze(-1);
    }
    auto context = at::einsum("bhnm,bhne->bhme", {kf, x.v});
    auto den = at::einsum("bhnm,bhm->bhn", {qf, kf.sum(2)});
    return at::einsum("bhme,bhnm->bhne", {context, qf}) / den.unsqueeze(-1);
  });
}

std::optional<Runner> make_softmax(const Shape& s, std::string&) {
  Inputs in = make_inputs(s);
  Runner r = finish(s, in, s.D, [causal = s.causal](const Inputs& x) {
    SoftmaxAttentionOptions o;
    o.causal = causal;
    return softmax_attention(x.q, x.k, x.v, o);
  });
  r.flops_forward = attention_flops(s, s.N, s.N, s.D);
  r.flops_backward = 2.5 * r.flops_forward;
  return r;
}

std::vector<Shape> grid(bool quick) {
  std::vector<Shape> g;
  for (int64_t n : quick ? std::vector<int64_t>{1024, 4096}
                         : std::vector<int64_t>{1024, 4096, 16384, 65536, 262144})
    for (bool causal : {false, true}) {
      Shape s;
      s.N = n, s.causal = causal;
      g.push_back(s);
    }
  return g;
}

RegisterSuite reg({"kernelized",
                   "linear attention: longattn (elu, sikf, favor m=64) vs the einsum/cumsum "
                   "composite (elu+1) vs exact softmax attention",
                   grid,
                   {{"longattn.kernelized_attention[elu]", false, longattn_case("elu")},
                    {"longattn.kernelized_attention[sikf]", false, longattn_case("sikf")},
                    {"longattn.kernelized_attention[favor]", false, longattn_case("favor")},
                    {"torch.linear_composite", true, make_composite},
                    {"performer.favor_composite", true, make_favor_composite},
                    {"longattn.softmax_attention", true, make_softmax}}});

}  // namespace
}  // namespace longattn::bench
