// Relative positions by FFT (issue 4):
//   toeplitz: longattn.toeplitz_matmul against the torch.fft composite a PyTorch user writes (the
//             FastRPB authors' code: pad, rfft, multiply by the rfft of the circulant kernel,
//             irfft, slice; autograd backward), at their length 2N-1 and at the power of two 2N;
//   fastrpb:  the cost FastRPB adds on top of an attention (out = attention + B v);
//   luo:      Luo et al.'s kernelized attention with RPE (favor features) against the composite
//             that transforms the whole [N, m (D+1)] tensor at once, and against exact
//             softmax_attention with rel_bias.
#include <torch/torch.h>

#include <cmath>

#include "bench/registry.h"
#include "longattn/kernelized_attention.h"
#include "longattn/kernelized_rpe.h"
#include "longattn/softmax_attention.h"
#include "longattn/toeplitz.h"
#include "nn/fast_rpb.h"

namespace longattn::bench {
namespace {

struct Inputs {
  at::Tensor coeffs, x, grad;  // toeplitz
  at::Tensor q, k, v, omega;   // attention
};

Runner finish(Inputs in, std::function<at::Tensor(const Inputs&)> f,
              std::initializer_list<at::Tensor> leaves_list) {
  std::vector<at::Tensor> leaves(leaves_list);
  Runner r;
  r.forward = [in, f] {
    torch::NoGradGuard g;
    f(in);
  };
  r.forward_backward = [in, f, leaves] {
    auto out = f(in);
    out.backward(in.grad);
    for (auto t : leaves)
      if (t.defined() && t.grad().defined()) t.mutable_grad().reset();
  };
  double out_bytes = bytes_of(in.grad);
  r.output_bytes_forward = out_bytes;
  double grads = 0;
  for (auto& t : leaves) grads += t.defined() ? bytes_of(t) : 0;
  r.output_bytes_backward = out_bytes + grads;
  return r;
}

// ------------------------------------------------------------------------------ toeplitz

Inputs toeplitz_inputs(const Shape& s) {
  Inputs in;
  in.coeffs = randn({s.H, 2 * s.N - 1}, s, true);
  in.x = randn({s.B, s.H, s.N, s.D}, s, true);
  in.grad = randn({s.B, s.H, s.N, s.D}, s);
  return in;
}

// The authors' composite (positional_bias/pytorch/fft.py), circular length L >= 2N - 1: the kernel
// k[t] = c[N - 1 - t] at t mod L, causal offsets r > 0 zeroed first.
at::Tensor fft_composite(const at::Tensor& coeffs, const at::Tensor& x, bool causal, int64_t L) {
  const int64_t N = x.size(2), H = coeffs.size(0);
  at::Tensor c = coeffs;
  if (causal) c = c * at::cat({at::ones({N}, c.options()), at::zeros({N - 1}, c.options())});
  at::Tensor k = c.flip({1});  // k[t + N - 1] = c[N - 1 - t]
  at::Tensor z = at::cat({k.slice(1, N - 1, 2 * N - 1), at::zeros({H, L - (2 * N - 1)}, c.options()),
                          k.slice(1, 0, N - 1)},
                         1);
  at::Tensor Z = at::fft_rfft(z, L, -1).unsqueeze(0).unsqueeze(-1);
  at::Tensor X = at::fft_rfft(x, L, 2);
  return at::fft_irfft(X * Z, L, 2).slice(2, 0, N);
}

double toeplitz_bytes(const Shape& s, double factor) {
  return factor * double(s.B) * s.H * s.N * s.D * double(c10::elementSize(s.dtype));
}

std::optional<Runner> make_toeplitz(const Shape& s, std::string&) {
  Inputs in = toeplitz_inputs(s);
  return finish(in, [c = s.causal](const Inputs& x) { return toeplitz_matmul(x.coeffs, x.x, c); },
                {in.coeffs, in.x});
}

std::optional<Runner> make_composite(const Shape& s, std::string& why, bool pow2) {
  if (toeplitz_bytes(s, 16) > max_case_bytes()) {
    why = "the padded spectra need more than --max-gib";
    return std::nullopt;
  }
  Inputs in = toeplitz_inputs(s);
  int64_t L = 2 * s.N - 1;
  if (pow2) L = int64_t{1} << static_cast<int>(std::ceil(std::log2(double(L))));
  return finish(in, [c = s.causal, L](const Inputs& x) { return fft_composite(x.coeffs, x.x, c, L); },
                {in.coeffs, in.x});
}

std::vector<Shape> toeplitz_grid(bool quick) {
  std::vector<Shape> g;
  for (int64_t n : quick ? std::vector<int64_t>{1024, 4096} : std::vector<int64_t>{1024, 4096, 16384, 65536})
    for (bool causal : {false, true}) {
      Shape s;
      s.N = n, s.causal = causal;
      g.push_back(s);
    }
  return g;
}

RegisterSuite reg_toeplitz(
    {"toeplitz",
     "Toeplitz product B x (D = channels): longattn vs the torch.fft composite of the FastRPB authors",
     toeplitz_grid,
     {{"longattn.toeplitz_matmul", false, make_toeplitz},
      {"torch.fft_composite(2N-1)", true,
       [](const Shape& s, std::string& w) { return make_composite(s, w, false); }},
      {"torch.fft_composite(pow2)", true,
       [](const Shape& s, std::string& w) { return make_composite(s, w, true); }}}});

// ------------------------------------------------------------------------------- fastrpb

Inputs attention_inputs(const Shape& s, int64_t m) {
  Inputs in;
  in.q = randn({s.B, s.H, s.N, s.D}, s, true);
  in.k = randn({s.B, s.H, s.N, s.D}, s, true);
  in.v = randn({s.B, s.H, s.N, s.D}, s, true);
  in.grad = randn({s.B, s.H, s.N, s.D}, s);
  in.coeffs = (0.1 * randn({s.H, 2 * s.N - 1}, s)).set_requires_grad(true);
  if (m > 0) in.omega = random_features(m, s.D, 0, RandomFeaturesOptions{}).to(s.dtype);
  return in;
}

// attention: "sikf" (kernelized_attention, the FastRPB authors' kernel) or "softmax".
std::optional<Runner> make_attention_rpb(const Shape& s, std::string&, const std::string& attention,
                                         bool with_rpb) {
  Inputs in = attention_inputs(s, 0);
  nn::FastRPBOptions o;
  o.heads = s.H, o.max_len = s.N, o.causal = s.causal;
  auto rpb = std::make_shared<nn::FastRPB>(o);
  (*rpb)->to(s.dtype);
  return finish(in,
                [rpb, with_rpb, attention, c = s.causal](const Inputs& x) {
                  at::Tensor out;
                  if (attention == "sikf") {
                    KernelizedAttentionOptions ko;
                    ko.causal = c;
                    out = kernelized_attention(x.q, x.k, x.v, "sikf", ko);
                  } else {
                    SoftmaxAttentionOptions so;
                    so.causal = c;
                    out = softmax_attention(x.q, x.k, x.v, so);
                  }
                  return with_rpb ? out + (*rpb)->forward(x.v) : out;
                },
                {in.q, in.k, in.v});
}

std::vector<Shape> fastrpb_grid(bool quick) {
  std::vector<Shape> g;
  for (int64_t n : quick ? std::vector<int64_t>{1024} : std::vector<int64_t>{1024, 4096}) {
    Shape s;
    s.N = n;
    g.push_back(s);
  }
  return g;
}

RegisterSuite reg_fastrpb(
    {"fastrpb", "FastRPB's cost on top of an attention: attention(q,k,v) + B v vs attention alone",
     fastrpb_grid,
     {{"sikf+FastRPB", false, [](const Shape& s, std::string& w) { return make_attention_rpb(s, w, "sikf", true); }},
      {"sikf", true, [](const Shape& s, std::string& w) { return make_attention_rpb(s, w, "sikf", false); }},
      {"softmax+FastRPB", false,
       [](const Shape& s, std::string& w) { return make_attention_rpb(s, w, "softmax", true); }},
      {"softmax", true, [](const Shape& s, std::string& w) { return make_attention_rpb(s, w, "softmax", false); }}}});

// ----------------------------------------------------------------------------------- luo

// Performer's positive random features, exp(omega x - |x|^2 / 2 - max) / sqrt(m), q and k scaled
// by D^-1/4 so that phi(q).phi(k) estimates exp(q.k / sqrt(D)). One shift per (b, h) for the keys
// (it cancels), one per row for the queries.
std::pair<at::Tensor, at::Tensor> favor(const Inputs& x) {
  const double scale = std::pow(double(x.q.size(3)), -0.25), m = double(x.omega.size(0));
  auto feat = [&](const at::Tensor& t, bool rowwise) {
    auto ts = t * scale;
    auto u = at::matmul(ts, x.omega.t()) - 0.5 * (ts * ts).sum(-1, true);
    auto shift = rowwise ? std::get<0>(u.max(-1, true)) : u.amax({2, 3}, true);
    return (u - shift.detach()).exp() / std::sqrt(m);
  };
  return {feat(x.q, true), feat(x.k, false)};
}

at::Tensor luo_composite(const at::Tensor& fq, const at::Tensor& fk, const at::Tensor& v,
                         const at::Tensor& b, bool causal) {
  const int64_t B = fq.size(0), H = fq.size(1), N = fq.size(2), m = fq.size(3), D = v.size(3);
  const int64_t L = 2 * N;
  at::Tensor A = at::cat({(fk.unsqueeze(-1) * v.unsqueeze(-2)).reshape({B, H, N, m * D}), fk}, -1);
  at::Tensor w = (b - std::get<0>(b.max(1, true)).detach()).exp();
  at::Tensor U = fft_composite(w, A, causal, L);
  at::Tensor num = at::einsum("bhnm,bhnmd->bhnd", {fq, U.slice(-1, 0, m * D).reshape({B, H, N, m, D})});
  at::Tensor den = (fq * U.slice(-1, m * D, m * D + m)).sum(-1, true);
  return num / den;
}

std::optional<Runner> make_luo(const Shape& s, std::string& why, int which) {
  const int64_t m = static_cast<int64_t>(s.get("m", 64));
  if (which == 1 && 24.0 * s.B * s.H * s.N * m * (s.D + 1) * 4 > max_case_bytes()) {
    why = "the whole [N, m (D+1)] spectra need more than --max-gib";
    return std::nullopt;
  }
  if (which == 2 && s.N > 16384) {
    why = "O(N^2) time: minutes per run at this length (ask for it with --n)";
    return std::nullopt;
  }
  Inputs in = attention_inputs(s, m);
  auto f = [which, c = s.causal](const Inputs& x) -> at::Tensor {
    if (which == 2) {
      SoftmaxAttentionOptions so;
      so.causal = c, so.rel_bias = x.coeffs;
      return softmax_attention(x.q, x.k, x.v, so);
    }
    if (which == 0) {  // the library's operator: favor features, then chunked FFT products
      KernelizedAttentionOptions o;
      o.causal = c, o.projection = x.omega, o.rel_bias = x.coeffs, o.eps = 0.0;
      const double scale = std::pow(double(x.q.size(3)), -0.25);
      return kernelized_attention(x.q * scale, x.k * scale, x.v, "favor", o);
    }
    auto [fq, fk] = favor(x);
    return luo_composite(fq, fk, x.v, x.coeffs, c);
  };
  return finish(in, f, {in.q, in.k, in.v, in.coeffs});
}

std::vector<Shape> luo_grid(bool quick) {
  std::vector<Shape> g;
  for (int64_t n : quick ? std::vector<int64_t>{1024} : std::vector<int64_t>{1024, 4096, 16384, 65536}) {
    Shape s;
    s.N = n, s.rel_bias = true;
    s.extra = {{"m", 64}};
    g.push_back(s);
  }
  return g;
}

RegisterSuite reg_luo(
    {"luo",
     "kernelized attention with RPE (favor, m=64): chunked FFT vs whole-tensor FFT composite vs exact softmax+rel_bias",
     luo_grid,
     {{"longattn.kernelized_attention(favor, rel_bias)", false, [](const Shape& s, std::string& w) { return make_luo(s, w, 0); }},
      {"torch.whole_tensor_fft(favor)", true, [](const Shape& s, std::string& w) { return make_luo(s, w, 1); }},
      {"longattn.softmax_attention(rel_bias)", true,
       [](const Shape& s, std::string& w) { return make_luo(s, w, 2); }}}});

}  // namespace
}  // namespace longattn::bench
