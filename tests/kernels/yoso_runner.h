// Calls into the YOSO kernels for the tests: allocate, run, return plain vectors.
#pragma once
#include <vector>

#include "kernels/yoso/yoso.h"
#include "yoso_reference.h"

namespace yoso_run {

using namespace longattn::kernels;
using yoso_ref::Problem;

struct Codes {
  std::vector<int32_t> q, k;
};

template <class T>
Codes hash(const Problem<T>& P, const YosoParams<T>& p) {
  Codes c{std::vector<int32_t>(P.B * P.H * p.num_hashes * P.Nq, -7),
          std::vector<int32_t>(P.B * P.H * p.num_hashes * P.Nk, -7)};
  yoso_hash(p, c.q.data(), c.k.data());
  return c;
}

template <class T>
std::vector<T> lsh_forward(const Problem<T>& P, const YosoParams<T>& p, const Codes& c) {
  std::vector<T> y(P.B * P.H * P.Nq * P.Dv, T(123));  // poison: every element must be written
  yoso_forward(p, c.q.data(), c.k.data(), BHND<T>::contiguous(y.data(), P.B, P.H, P.Nq, P.Dv));
  return y;
}

template <class T>
std::vector<T> expectation_forward(const Problem<T>& P, const YosoParams<T>& p) {
  std::vector<T> y(P.B * P.H * P.Nq * P.Dv, T(123));
  yoso_expectation_forward(p, BHND<T>::contiguous(y.data(), P.B, P.H, P.Nq, P.Dv));
  return y;
}

template <class T>
struct Grads {
  std::vector<T> q, k, v;
};

// Runs f(params, grads) with freshly poisoned gradient buffers.
template <class T, class F>
Grads<T> backward(const Problem<T>& P, const YosoParams<T>& p, const std::vector<T>& gout, F f) {
  Grads<T> G{std::vector<T>(P.q.size(), T(123)), std::vector<T>(P.k.size(), T(123)),
             std::vector<T>(P.v.size(), T(123))};
  YosoGrads<T> g;
  g.grad_out = BHND<const T>::contiguous(gout.data(), P.B, P.H, P.Nq, P.Dv);
  g.grad_q = BHND<T>::contiguous(G.q.data(), P.B, P.H, P.Nq, P.D);
  g.grad_k = BHND<T>::contiguous(G.k.data(), P.B, P.H, P.Nk, P.D);
  g.grad_v = BHND<T>::contiguous(G.v.data(), P.B, P.H, P.Nk, P.Dv);
  f(p, g);
  return G;
}

template <class T>
Grads<T> lsh_backward(const Problem<T>& P, const YosoParams<T>& p, const Codes& c,
                      const std::vector<T>& gout) {
  return backward(P, p, gout, [&](const YosoParams<T>& pp, const YosoGrads<T>& g) {
    yoso_backward_lsh(pp, c.q.data(), c.k.data(), g);
  });
}

template <class T>
Grads<T> expectation_backward(const Problem<T>& P, const YosoParams<T>& p,
                              const std::vector<T>& gout, YosoDerivative kind) {
  return backward(P, p, gout, [&](const YosoParams<T>& pp, const YosoGrads<T>& g) {
    yoso_expectation_backward(pp, g, kind);
  });
}

}  // namespace yoso_run
