#include "nn/shatter.h"

#include <cmath>

#include "longattn/shatter.h"

namespace longattn::nn {

ShatterPartitionImpl::ShatterPartitionImpl(ShatterPartitionOptions o) : options(std::move(o)) {
  TORCH_CHECK(options.num_parts() >= 1, "longattn.nn.ShatterPartition: num_parts must be >= 1, got ",
              options.num_parts());
  TORCH_CHECK(options.kind() == "softmax" || options.kind() == "bernstein",
              "longattn.nn.ShatterPartition: kind must be 'softmax' or 'bernstein', got '", options.kind(), "'");
  if (options.kind() == "softmax") {
    TORCH_CHECK(options.degree() >= 1, "longattn.nn.ShatterPartition: degree must be >= 1, got ", options.degree());
    weight = register_parameter("weight", torch::zeros({options.num_parts(), options.degree() + 1}));
    reset_parameters();
  }
}

void ShatterPartitionImpl::reset_parameters() {
  if (!weight.defined()) return;
  // Soft bins -(u - c_p)^2 / tau; the common -u^2 / tau cancels in the softmax.
  torch::NoGradGuard ng;
  const int64_t P = options.num_parts();
  const double top = std::log1p(options.init_range());
  const double tau = P > 1 ? std::pow(2 * top / double(P - 1), 2) / 2 : 1.0;
  weight.zero_();
  for (int64_t p = 0; p < P; ++p) {
    const double c = P > 1 ? -top + 2 * top * double(p) / double(P - 1) : 0.0;
    weight[p][0] = -c * c / tau;
    weight[p][1] = 2 * c / tau;
  }
}

at::Tensor ShatterPartitionImpl::forward(int64_t n) {
  auto opts = weight.defined() ? weight.options().requires_grad(false) : torch::TensorOptions();
  auto r = torch::arange(-(n - 1), n, opts);
  auto u = torch::sign(r) * torch::log1p(r.abs());
  const int64_t P = options.num_parts();
  if (options.kind() == "softmax") {
    std::vector<at::Tensor> powers;
    for (int64_t k = 0; k <= options.degree(); ++k) powers.push_back(u.pow(double(k)));
    return torch::softmax(weight.matmul(torch::stack(powers)), 0);
  }
  auto t = ((1 + u / std::log1p(double(options.max_distance()))) / 2).clamp(0, 1);
  std::vector<at::Tensor> parts;
  for (int64_t p = 0; p < P; ++p) {
    double binom = 1;
    for (int64_t i = 1; i <= p; ++i) binom = binom * double(P - 1 - p + i) / double(i);
    parts.push_back(binom * t.pow(double(p)) * (1 - t).pow(double(P - 1 - p)));
  }
  return torch::stack(parts);
}

ShatterImpl::ShatterImpl(ShatterOptions o) : options(std::move(o)) {
  TORCH_CHECK(options.activation() == "softmax" || options.activation() == "sigmoid",
              "longattn.nn.Shatter: activation must be 'softmax' or 'sigmoid', got '", options.activation(), "'");
  const int64_t E = options.embed_dim(), P = options.num_parts();
  if (!options.key_projection()) options.qk_dim(E);
  if (options.value_dim() <= 0) options.value_dim(std::max<int64_t>(1, E / P));
  auto lin = [&](int64_t in, int64_t out) {
    return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(options.bias()));
  };
  q_proj = register_module("q_proj", lin(E, options.qk_dim()));
  if (options.key_projection()) k_proj = register_module("k_proj", lin(E, options.qk_dim()));
  v_proj = register_module("v_proj", lin(E, P * options.value_dim()));
  out_proj = register_module("out_proj", lin(options.value_dim(), E));
  partition = register_module(
      "partition", ShatterPartition(ShatterPartitionOptions(P)
                                        .kind(options.partition())
                                        .degree(options.partition_degree())
                                        .init_range(options.partition_init_range())
                                        .max_distance(options.partition_max_distance())));
}

at::Tensor ShatterImpl::forward(const at::Tensor& x, const c10::optional<at::Tensor>& key_padding_mask) {
  TORCH_CHECK(x.dim() == 3 && x.size(2) == options.embed_dim(), "longattn.nn.Shatter: x must have shape [B, N, ",
              options.embed_dim(), "], got ", x.sizes());
  const int64_t B = x.size(0), N = x.size(1);
  auto q = q_proj(x);
  auto k = k_proj ? k_proj(x) : x;
  // [B, N, P*Dv] -> [B, P, N, Dv] as a strided view: the operator takes it without a copy.
  auto v = v_proj(x).view({B, N, options.num_parts(), options.value_dim()}).transpose(1, 2);
  auto pi = partition(N).to(x.device(), x.scalar_type());  // a fixed partition has no weight to place it
  ShatterAttentionOptions o;
  o.activation = options.activation();
  o.causal = options.causal();
  o.key_padding_mask = key_padding_mask;
  return out_proj(shatter_attention(q, k, v, pi, o));
}

}  // namespace longattn::nn
