// Benchmark cases register here, one file per operator family (suite_<family>.cpp).
// A case builds its inputs for a shape and returns closures that the harness times.
#pragma once
#include <torch/types.h>

#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace longattn::bench {

struct Shape {
  int64_t B = 1, H = 8, N = 1024, D = 64;
  bool causal = false;
  bool rel_bias = false;
  at::ScalarType dtype = at::kFloat;
  // Family-specific knobs (feature count m, hash bits, parts P, ...), by name.
  std::vector<std::pair<std::string, double>> extra;
  double get(const std::string& key, double fallback) const {
    for (auto& [k, v] : extra)
      if (k == key) return v;
    return fallback;
  }
};

struct Runner {
  std::function<void()> forward;           // forward only, no autograd graph
  std::function<void()> forward_backward;  // forward + backward; empty if unsupported
  double flops_forward = 0;   // 0: no FLOP count for this op (GFLOP/s left blank)
  double flops_backward = 0;
  // Bytes of what a run leaves as results (outputs; gradients for fwd+bwd): the harness
  // reports peak memory both in full and beyond these.
  double output_bytes_forward = 0;
  double output_bytes_backward = 0;
};

struct Case {
  std::string name;       // e.g. "longattn.softmax_attention", "torch.sdpa"
  bool baseline = false;
  // Returns nullopt (and sets why) when the case does not apply to the shape or would not fit.
  std::function<std::optional<Runner>(const Shape&, std::string& why)> make;
};

struct Suite {
  std::string name;
  std::string description;
  std::function<std::vector<Shape>(bool quick)> default_grid;
  std::vector<Case> cases;
};

std::vector<Suite>& suites();

struct RegisterSuite {
  explicit RegisterSuite(Suite s) { suites().push_back(std::move(s)); }
};

// Helpers for cases.
at::Tensor randn(at::IntArrayRef shape, const Shape& s, bool requires_grad = false);
double bytes_of(const at::Tensor& t);
// Upper bound for any single case's estimated working set (--max-gib); cases that would
// need more decline with a reason instead of exhausting the machine.
double max_case_bytes();
void set_max_case_bytes(double b);
// Standard FLOP count of attention, FlashAttention's convention: 4·B·H·Nq·Nk·D forward,
// halved when causal; the backward counts 2.5× the forward.
double attention_flops(const Shape& s, int64_t Nq, int64_t Nk, int64_t D);
// Clears .grad of the given leaf tensors (between timed fwd+bwd repetitions).
void clear_grads(std::initializer_list<at::Tensor> ts);

}  // namespace longattn::bench
