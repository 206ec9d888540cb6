// YOSO: longattn.yoso_attention (LSH, linear) and yoso_expectation (YOSO-E, fused) against exact
// softmax attention (longattn and torch SDPA) and YOSO-E as a PyTorch user writes it (Hugging
// Face's default on CPU: a materialised N×N arccos matrix, with the paper's surrogate backward).
// τ = round(log2 N) and m = 32 as the authors, unless the shape's extras say otherwise.
#include <torch/torch.h>

#include <cmath>

#include "bench/registry.h"
#include "longattn/softmax_attention.h"
#include "longattn/yoso.h"

namespace longattn::bench {
namespace {

struct Inputs {
  at::Tensor q, k, v, grad_out;
};

Inputs make_inputs(const Shape& s) {
  return {randn({s.B, s.H, s.N, s.D}, s, true), randn({s.B, s.H, s.N, s.D}, s, true),
          randn({s.B, s.H, s.N, s.D}, s, true), randn({s.B, s.H, s.N, s.D}, s)};
}

int64_t hash_bits(const Shape& s) {
  return int64_t(s.get("hash_bits", std::round(std::log2(double(std::max<int64_t>(s.N, 2))))));
}
int64_t num_hashes(const Shape& s) { return int64_t(s.get("num_hashes", 32)); }

Runner finish(const Shape&, Inputs in, std::function<at::Tensor(const Inputs&)> f) {
  Runner r;
  r.forward = [in, f] { f(in); };
  r.forward_backward = [in, f] {
    auto out = f(in);
    out.backward(in.grad_out);
    clear_grads({in.q, in.k, in.v});
  };
  const double t = bytes_of(in.q);
  r.output_bytes_forward = t;
  r.output_bytes_backward = 4 * t;
  return r;
}

std::optional<Runner> make_lsh(const Shape& s, const std::string& hashing) {
  const int64_t tau = hash_bits(s), m = num_hashes(s);
  return finish(s, make_inputs(s), [tau, m, hashing](const Inputs& x) {
    YosoOptions o;
    o.hash_bits = tau;
    o.num_hashes = m;
    o.seed = 1;
    o.hashing = hashing;
    return yoso_attention(x.q, x.k, x.v, o);
  });
}

double dense_bytes(const Shape& s) {
  return double(s.B) * s.H * s.N * s.N * double(c10::elementSize(s.dtype));
}

std::optional<Runner> make_expectation(const Shape& s, std::string& why) {
  if (s.N > 16384) {
    why = "O(N²) time: minutes per call beyond N = 16384";
    return std::nullopt;
  }
  const int64_t tau = hash_bits(s);
  return finish(s, make_inputs(s), [tau](const Inputs& x) {
    YosoExpectationOptions o;
    o.hash_bits = tau;
    o.backward = "surrogate";
    return yoso_expectation(x.q, x.k, x.v, o);
  });
}

// Hugging Face's YosoCumulation: E = (1 − acos(QKᵀ)/π)^τ materialised, Y = E V; the backward
// recomputes E and applies the paper's surrogate (τ/2)·E.
class HfYosoCumulation : public torch::autograd::Function<HfYosoCumulation> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& q,
                            const at::Tensor& k, const at::Tensor& v, int64_t tau) {
    ctx->save_for_backward({q, k, v});
    ctx->saved_data["tau"] = tau;
    return at::matmul(expectation(q, k, tau), v);
  }
  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grads) {
    auto s = ctx->get_saved_variables();
    const int64_t tau = ctx->saved_data["tau"].toInt();
    at::Tensor e = expectation(s[0], s[1], tau);
    at::Tensor w = at::matmul(grads[0], s[2].transpose(-1, -2)) * e;
    return {at::matmul(w, s[1]) * (tau / 2.0), at::matmul(w.transpose(-1, -2), s[0]) * (tau / 2.0),
            at::matmul(e.transpose(-1, -2), grads[0]), at::Tensor()};
  }
  static at::Tensor expectation(const at::Tensor& q, const at::Tensor& k, int64_t tau) {
    return at::pow(1 - at::acos(at::matmul(q, k.transpose(-1, -2))) / M_PI, double(tau));
  }
};

std::optional<Runner> make_hf_composite(const Shape& s, std::string& why) {
  if (4 * dense_bytes(s) > max_case_bytes()) {
    why = "the N×N tensors need " + std::to_string(int(4 * dense_bytes(s) / (1 << 30))) + " GiB";
    return std::nullopt;
  }
  const int64_t tau = hash_bits(s);
  return finish(s, make_inputs(s), [tau](const Inputs& x) {
    auto q = torch::nn::functional::normalize(x.q, torch::nn::functional::NormalizeFuncOptions().dim(-1));
    auto k = torch::nn::functional::normalize(x.k, torch::nn::functional::NormalizeFuncOptions().dim(-1));
    return HfYosoCumulation::apply(q, k, x.v, tau);
  });
}

std::optional<Runner> make_softmax(const Shape& s, std::string& why) {
  if (s.N > 16384) {
    why = "O(N²) time: minutes per call beyond N = 16384";
    return std::nullopt;
  }
  return finish(s, make_inputs(s), [](const Inputs& x) { return softmax_attention(x.q, x.k, x.v); });
}

std::optional<Runner> make_sdpa(const Shape& s, std::string& why) {
  if (s.N > 16384) {
    why = "O(N²) time: minutes per call beyond N = 16384";
    return std::nullopt;
  }
  return finish(s, make_inputs(s), [](const Inputs& x) {
    return at::scaled_dot_product_attention(x.q, x.k, x.v);
  });
}

std::vector<Shape> grid(bool quick) {
  std::vector<Shape> g;
  for (int64_t n : quick ? std::vector<int64_t>{512, 1024, 2048}
                         : std::vector<int64_t>{1024, 4096, 16384, 65536}) {
    Shape s;
    s.N = n;
    g.push_back(s);
  }
  return g;
}

RegisterSuite reg({"yoso",
                   "YOSO (LSH, τ = log2 N, m = 32) vs YOSO-E (fused; and as Hugging Face writes it) "
                   "vs exact softmax",
                   grid,
                   {{"longattn.yoso_attention[hadamard]", false,
                     [](const Shape& s, std::string&) { return make_lsh(s, "hadamard"); }},
                    {"longattn.yoso_attention[gaussian]", false,
                     [](const Shape& s, std::string&) { return make_lsh(s, "gaussian"); }},
                    {"longattn.yoso_expectation", false, make_expectation},
                    {"longattn.softmax_attention", true, make_softmax},
                    {"torch.sdpa", true, make_sdpa},
                    {"hf.yoso_e_composite", true, make_hf_composite}}});

}  // namespace
}  // namespace longattn::bench
