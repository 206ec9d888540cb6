// Reference path of kernelized attention and its feature maps (issue #17): the formulas of
// kernels/kernelized_attention/kernelized_attention.h with ATen operations only, on any device.
//
// What it computes is the kernel's definition, stabilisers included: query features phi(q_i)
// e^{-c_i} (the row's own largest exponent), key features phi(k_j) e^{c_j - R_i} with R_i the
// largest key exponent over the keys that take part for row i (non-causal: one R per (b, h);
// causal: the running maximum over j <= i), and eps added to that stabilised denominator. The
// backward is the same exact derivative as the kernel's, the eps-sized gradients of the maxima
// routed to the key and feature that attain them (the first on ties, as the kernel).
//
// Method.
//  - Non-causal: one pass over key chunks accumulates S = sum_j phi(k_j)e^{c_j-R} v_j^T [m, Dv] and
//    z = sum_j phi(k_j)e^{c_j-R} [m] by matmul, one pass over query chunks applies them. Backward:
//    a pass over query chunks (grad q; G_S = sum_i phi(q_i) gn_i^T, the gradient of the state),
//    then one over key chunks (grad k, grad v from G_S).
//  - Causal: chunks of C rows (C <= 64). Inside a chunk the C x C weights are one matmul, masked
//    by torch.where to j <= i, and every contraction over positions goes through
//    triangular_matmul, so no future key or value, NaN or inf, reaches an earlier row; the
//    earlier chunks act through the running state (S, z) kept relative to the running maximum at
//    the end of the last chunk. Backward: a forward scan (grad q) and a reverse scan with the
//    reverse state (G_S, G_z) for grad k and grad v, as the kernel.
//
// Peak memory (elements beyond the inputs; s = element size, BH = B * H, N = max(Nq, Nk),
// X = max(m, Dv + 1, D), E = kReferenceChunkElements = 2^24):
//  non-causal rows per chunk r = max(1, E / (BH X)), so one chunk's feature tensor T = BH r X
//  holds min(E, BH N X) elements (or BH X when a single row is larger):
//    forward   BH Nq (Dv + 1) [out, inv] + 3 BH Nk [key exponents, argmax (int64 = 2)]
//              + 2 BH m (Dv + 1) [state] + 6 T
//    backward  BH (Nq D + Nk (D + Dv)) [the gradients] + 3 BH Nk + 4 BH m (Dv + 1) + 16 T
//  causal chunk C = min(64, N, floor(sqrt(E / (BH X)))), P = BH C^2 X <= E the masked product:
//    forward   BH N (Dv + 1) + 5 BH N [exponents, argmax, running maxima] + 2 BH m (Dv + 1)
//              + 2 P + 12 BH C X + 6 min(E, BH N X) [the key-exponent pass]
//    backward  BH N (2 D + Dv) + 12 BH N [exponents, maxima, owners (int64), inverse
//              denominators, eps gradients] + 4 BH m (Dv + 1) + 2 P + 16 BH C X
//              + 6 min(E, BH N X) [the key-exponent pass: u, phi, shifts of a chunk of keys]
//  feature maps (forward, backward): the outputs plus 3 BH N m (u, phi and a masked copy).
// No term is N x N: every N enters once, times a feature or value width, or as a scalar per row.
// bfloat16/float16 inputs are computed in float32 copies (2 BH N (D + Dv) more), as the kernel.
#include "ops/reference/kernelized_attention.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "kernels/kernelized_attention/feature_maps.h"
#include "ops/common.h"

namespace longattn::ops::reference {

int64_t concrete(const at::Tensor& t, int64_t dim) {
  return t.sym_size(dim).guard_int(__FILE__, __LINE__);
}

std::vector<int64_t> concrete_sizes(const at::Tensor& t) {
  std::vector<int64_t> s(t.dim());
  for (int64_t d = 0; d < t.dim(); ++d) s[d] = concrete(t, d);
  return s;
}

int64_t triangular_block(int64_t batch, int64_t d, int64_t n) {
  const double per = double(std::max<int64_t>(1, batch)) * double(std::max<int64_t>(1, d));
  const auto c = static_cast<int64_t>(std::sqrt(double(kReferenceChunkElements) / per));
  return std::max<int64_t>(1, std::min(n, c));
}

at::Tensor triangular_matmul(const at::Tensor& M, const at::Tensor& X, bool upper, int64_t block) {
  const int64_t n = concrete(X, -2);
  // M's batch dims may broadcast against X's: the result takes both.
  const std::vector<int64_t> ms = concrete_sizes(M), xs = concrete_sizes(X);
  std::vector<int64_t> sizes = at::infer_size(c10::IntArrayRef(ms).slice(0, ms.size() - 2),
                                              c10::IntArrayRef(xs).slice(0, xs.size() - 2));
  sizes.push_back(n);
  sizes.push_back(concrete(X, -1));
  at::Tensor out = at::zeros(sizes, X.options());
  block = std::max<int64_t>(1, block);
  for (int64_t s0 = 0; s0 < n; s0 += block) {
    const int64_t len = std::min(block, n - s0), s1 = s0 + len;
    const at::Tensor rows = M.narrow(-2, s0, len);
    at::Tensor res = out.narrow(-2, s0, len);
    // Columns wholly on the allowed side of every row of the block: a plain product.
    if (!upper && s0 > 0) res.add_(at::matmul(rows.narrow(-1, 0, s0), X.narrow(-2, 0, s0)));
    if (upper && s1 < n) res.add_(at::matmul(rows.narrow(-1, s1, n - s1), X.narrow(-2, s1, n - s1)));
    // The diagonal block: the masked product, summed over its columns.
    at::Tensor prod = rows.narrow(-1, s0, len).unsqueeze(-1) * X.narrow(-2, s0, len).unsqueeze(-3);
    at::Tensor ones = at::ones({len, len}, X.options().dtype(at::kBool));
    const at::Tensor outside = (upper ? ones.tril(-1) : ones.triu(1)).unsqueeze(-1);
    prod.masked_fill_(outside, 0);
    res.add_(prod.sum(-2));
  }
  return out;
}

namespace {

using kernels::FeatureMap;

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

FeatureMap map_of(int64_t code) { return static_cast<FeatureMap>(code); }

FeatureMap map_named(c10::string_view name) {
  FeatureMap f;
  if (!kernels::feature_map_from_name(std::string(name).c_str(), &f))
    fail("feature_map", "unknown feature_map '" + std::string(name) + "'");
  return f;
}

bool exponential(FeatureMap f) { return kernels::feature_map_is_exponential(f); }

int64_t feature_dim(FeatureMap f, const at::Tensor& x, const OptTensor& projection) {
  return f == FeatureMap::favor ? concrete(*projection, -2) : concrete(x, 3);
}

// Row-own features of x [..., n, D]: phi [..., n, m]; for sikf/favor also the shift c [..., n]
// and the index of the exponent that attains it [..., n] (int64). torch's max over a dim returns
// the first maximal index, as the kernel's row_max.
struct Features {
  at::Tensor phi, shift, arg;
};

Features features_of(const at::Tensor& x, FeatureMap f, const OptTensor& omega) {
  switch (f) {
    case FeatureMap::elu:
      return {at::where(x > 0, x + 1, at::exp(x)), {}, {}};
    case FeatureMap::relu:
      return {at::where(x > 0, x, at::zeros({}, x.options())), {}, {}};
    case FeatureMap::sikf: {
      auto [c, a] = x.max(-1, true);
      return {at::exp(x - c), c.squeeze(-1), a.squeeze(-1)};
    }
    case FeatureMap::favor: {
      const at::Tensor u = at::matmul(x, omega->transpose(-1, -2));
      auto [c0, a] = u.max(-1, true);
      const double inv_sqrt_m = 1.0 / std::sqrt(double(concrete(u, -1)));
      // c = max_r u_r - |x|^2 / 2: the row constant leaves the argmax alone (as the kernel).
      at::Tensor shift = c0.squeeze(-1) - x.mul(x).sum(-1).mul(0.5);
      return {at::exp(u - c0).mul_(inv_sqrt_m), shift, a.squeeze(-1)};
    }
  }
  return {};
}

// Gradient of x from g_phi (the shift held fixed) and g_shift, the TOTAL derivative with respect
// to the shift (undefined: none), which lands on the exponent that attains it. phi is the
// feature the loss saw (row-own, or already scaled by a key's stabiliser: the products g_phi phi
// are what matter).
at::Tensor features_backward(const at::Tensor& x, FeatureMap f, const OptTensor& omega,
                             const at::Tensor& phi, const at::Tensor& arg, const at::Tensor& g_phi,
                             const at::Tensor& g_shift) {
  switch (f) {
    case FeatureMap::elu:
      return at::where(x > 0, g_phi, g_phi * phi);
    case FeatureMap::relu:
      return at::where(x > 0, g_phi, at::zeros({}, g_phi.options()));
    case FeatureMap::sikf:
    case FeatureMap::favor: {
      at::Tensor gu = g_phi * phi;
      if (g_shift.defined()) gu.scatter_add_(-1, arg.unsqueeze(-1), g_shift.unsqueeze(-1).to(gu.scalar_type()));
      if (f == FeatureMap::sikf) return gu;
      // u_r = omega_r . x - |x|^2 / 2  =>  grad x = gu omega - x sum(gu).
      return at::matmul(gu, *omega) - x * gu.sum(-1, true);
    }
  }
  return {};
}

// 1 / (d + eps), 0 where that is not positive or not finite (as Head::inverse_denominator).
at::Tensor inverse_denominator(const at::Tensor& den, double eps) {
  const at::Tensor d = den + eps;
  const at::Tensor inv = at::where(d > 0, d.reciprocal(), at::zeros({}, d.options()));
  return at::where(inv.isinf(), at::zeros({}, d.options()), inv);
}

// e^{a - b} for a stabilised quantity with exponent a seen from b >= a; 0 when a = -inf (nothing
// there), whatever b is (as Head::fac).
at::Tensor fac(const at::Tensor& a, const at::Tensor& b) {
  return at::where(a == kNegInf, at::zeros({}, a.options()), at::exp(a - b));
}

at::Tensor zero_where_not(const at::Tensor& keep, const at::Tensor& t) {
  return at::where(keep, t, at::zeros({}, t.options()));
}

// The key mask of rows [j0, j0 + n) as [B, 1, n] (undefined: every key takes part).
at::Tensor mask_rows(const OptTensor& mask, int64_t j0, int64_t n) {
  if (!mask || !mask->defined()) return {};
  return mask->narrow(1, j0, n).unsqueeze(1);
}

at::Tensor masked_rows(const at::Tensor& keep, const at::Tensor& t) {
  return keep.defined() ? zero_where_not(keep.unsqueeze(-1), t) : t;
}

// Everything about one (b, h) problem the passes share.
struct Problem {
  FeatureMap f;
  OptTensor omega;
  int64_t B, H, Nq, Nk, D, Dv, m;
  bool exp_map;
  double eps;
};

// Key exponents c_j [B, H, Nk] (-inf for masked keys; 0 for elu/relu) and, for the exponential
// maps, the feature index attaining each (int64), computed chunk by chunk.
std::pair<at::Tensor, at::Tensor> key_exponents(const Problem& p, const at::Tensor& k,
                                                const OptTensor& mask, int64_t rows) {
  at::Tensor c = at::zeros({p.B, p.H, p.Nk}, k.options());
  at::Tensor arg;
  if (p.exp_map) {
    arg = at::zeros({p.B, p.H, p.Nk}, k.options().dtype(at::kLong));
    for (int64_t j0 = 0; j0 < p.Nk; j0 += rows) {
      const int64_t n = std::min(rows, p.Nk - j0);
      Features F = features_of(k.narrow(2, j0, n), p.f, p.omega);
      c.narrow(2, j0, n).copy_(F.shift);
      arg.narrow(2, j0, n).copy_(F.arg);
    }
  }
  if (mask && mask->defined())
    c = at::where(mask->unsqueeze(1), c, at::full({}, kNegInf, c.options()));
  return {c, arg};
}

// ---------------------------------------------------------------- non-causal

struct KeyState {
  at::Tensor S, z;           // sum_j kfe_j v_j^T [B, H, m, Dv], sum_j kfe_j [B, H, m]
  at::Tensor R, Rs, has_key; // largest key exponent [B, H] (-inf: no key), R or 0, R > -inf
};

// Effective key features of a chunk: phi(k_j) e^{c_j - R} (0 for masked keys), and v with
// masked rows zeroed (a masked key's values are never read).
std::pair<at::Tensor, at::Tensor> effective_keys(const Features& F,
                                                 const at::Tensor& c, const at::Tensor& ref,
                                                 const at::Tensor& v, const at::Tensor& keep) {
  at::Tensor kfe = F.phi * at::exp(c - ref).unsqueeze(-1);
  return {masked_rows(keep, kfe), masked_rows(keep, v)};
}

KeyState key_state(const Problem& p, const at::Tensor& k, const at::Tensor& v,
                   const OptTensor& mask, const at::Tensor& c, int64_t rows) {
  KeyState st;
  st.R = c.amax(-1);
  st.has_key = st.R != kNegInf;
  st.Rs = zero_where_not(st.has_key, st.R);
  st.S = at::zeros({p.B, p.H, p.m, p.Dv}, k.options());
  st.z = at::zeros({p.B, p.H, p.m}, k.options());
  for (int64_t j0 = 0; j0 < p.Nk; j0 += rows) {
    const int64_t n = std::min(rows, p.Nk - j0);
    const Features F = features_of(k.narrow(2, j0, n), p.f, p.omega);
    auto [kfe, vm] = effective_keys(F, c.narrow(2, j0, n), st.Rs.unsqueeze(-1), v.narrow(2, j0, n),
                                    mask_rows(mask, j0, n));
    st.S.add_(at::matmul(kfe.transpose(-1, -2), vm));
    st.z.add_(kfe.sum(-2));
  }
  return st;
}

std::tuple<at::Tensor, at::Tensor> forward_full(const Problem& p, const at::Tensor& q,
                                                const at::Tensor& k, const at::Tensor& v,
                                                const OptTensor& mask, int64_t rows) {
  const at::Tensor c = key_exponents(p, k, mask, rows).first;
  const KeyState st = key_state(p, k, v, mask, c, rows);
  at::Tensor out = at::empty({p.B, p.H, p.Nq, p.Dv}, v.options());
  at::Tensor inv = at::empty({p.B, p.H, p.Nq}, q.options());
  const at::Tensor live = st.has_key.unsqueeze(-1);
  for (int64_t i0 = 0; i0 < p.Nq; i0 += rows) {
    const int64_t n = std::min(rows, p.Nq - i0);
    const at::Tensor qf = features_of(q.narrow(2, i0, n), p.f, p.omega).phi;
    // A (b, h) with no key skips its queries (as the kernel): zero numerators, whatever q holds.
    const at::Tensor num = zero_where_not(live.unsqueeze(-1), at::matmul(qf, st.S));
    const at::Tensor den = zero_where_not(live, at::matmul(qf, st.z.unsqueeze(-1)).squeeze(-1));
    const at::Tensor iv = inverse_denominator(den, p.eps);
    out.narrow(2, i0, n).copy_(num * iv.unsqueeze(-1));
    inv.narrow(2, i0, n).copy_(iv);
  }
  return {out, inv};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_full(
    const Problem& p, const at::Tensor& go, const at::Tensor& q, const at::Tensor& k,
    const at::Tensor& v, const at::Tensor& out, const at::Tensor& inv, const OptTensor& mask,
    int64_t rows) {
  auto [c, argk] = key_exponents(p, k, mask, rows);
  const KeyState st = key_state(p, k, v, mask, c, rows);
  const at::Tensor live = st.has_key.unsqueeze(-1);
  // The key whose exponent is R (the first, as the kernel) receives R's gradient.
  const at::Tensor owner = c.argmax(-1, true);
  at::Tensor gq = at::empty(concrete_sizes(q), q.options());
  at::Tensor gk = at::empty(concrete_sizes(k), k.options());
  at::Tensor gv = at::empty(concrete_sizes(v), v.options());
  at::Tensor G_S = at::zeros_like(st.S), G_z = at::zeros_like(st.z);
  at::Tensor grad_R = at::zeros({p.B, p.H, 1}, q.options());
  for (int64_t i0 = 0; i0 < p.Nq; i0 += rows) {
    const int64_t n = std::min(rows, p.Nq - i0);
    const at::Tensor qx = q.narrow(2, i0, n);
    const Features F = features_of(qx, p.f, p.omega);
    const at::Tensor iv = inv.narrow(2, i0, n);
    const at::Tensor gz = go.narrow(2, i0, n);
    // Gradient of the augmented numerator [n_i, d_i] (head.h numerator_grads), and of the row's
    // stabiliser: delta_i = -(gz_i . z_i) eps inv_i.
    const at::Tensor dot = (gz * out.narrow(2, i0, n)).sum(-1);
    const at::Tensor gn_v = gz * iv.unsqueeze(-1);
    const at::Tensor gn_d = -dot * iv;
    const at::Tensor delta = gn_d * p.eps;
    const at::Tensor gphi = at::matmul(gn_v, st.S.transpose(-1, -2)) + gn_d.unsqueeze(-1) * st.z.unsqueeze(-2);
    const at::Tensor g = features_backward(qx, p.f, p.omega, F.phi, F.arg, gphi,
                                           p.exp_map ? delta : at::Tensor());
    gq.narrow(2, i0, n).copy_(zero_where_not(live.unsqueeze(-1), g));
    G_S.add_(at::matmul(F.phi.transpose(-1, -2), gn_v));
    G_z.add_(at::matmul(F.phi.transpose(-1, -2), gn_d.unsqueeze(-1)).squeeze(-1));
    grad_R.add_(delta.sum(-1, true));
  }
  for (int64_t j0 = 0; j0 < p.Nk; j0 += rows) {
    const int64_t n = std::min(rows, p.Nk - j0);
    const at::Tensor kx = k.narrow(2, j0, n);
    const at::Tensor keep = mask_rows(mask, j0, n);
    const Features F = features_of(kx, p.f, p.omega);
    auto [kfe, vm] = effective_keys(F, c.narrow(2, j0, n), st.Rs.unsqueeze(-1), v.narrow(2, j0, n), keep);
    const at::Tensor gphi = masked_rows(keep, at::matmul(vm, G_S.transpose(-1, -2)) + G_z.unsqueeze(-2));
    at::Tensor delta;
    if (p.exp_map) {
      const at::Tensor j = at::arange(j0, j0 + n, owner.options());
      delta = zero_where_not(j == owner, grad_R.expand({p.B, p.H, n}));
    }
    at::Tensor g = features_backward(kx, p.f, p.omega, kfe, p.exp_map ? argk.narrow(2, j0, n) : at::Tensor(),
                                     gphi, delta);
    at::Tensor keep_all = live.unsqueeze(-1);
    if (keep.defined()) keep_all = keep_all.logical_and(keep.unsqueeze(-1));
    gk.narrow(2, j0, n).copy_(zero_where_not(keep_all, g));
    gv.narrow(2, j0, n).copy_(zero_where_not(keep_all, at::matmul(kfe, G_S)));
  }
  return {gq, gk, gv};
}

// ---------------------------------------------------------------- causal

int64_t causal_chunk(const Problem& p) {
  const int64_t X = std::max({p.m, p.Dv + 1, p.D});
  return std::min<int64_t>({64, std::max<int64_t>(1, p.Nq), triangular_block(p.B * p.H, X, 64)});
}

// The tensors of one causal chunk [t0, t0 + n).
struct CausalChunk {
  Features Fq, Fk;
  at::Tensor kf, vm, c, R, keep;  // masked key features and values, exponents, running maxima
  at::Tensor scale;               // e^{c_j - R_i} for j <= i and a row with a key, else 0: [n, n]
  at::Tensor on;                  // j <= i and the row has a key
};

CausalChunk causal_chunk_tensors(const Problem& p, const at::Tensor& q, const at::Tensor& k,
                                 const at::Tensor& v, const OptTensor& mask, const at::Tensor& c,
                                 const at::Tensor& R, int64_t t0, int64_t n) {
  CausalChunk w;
  w.Fq = features_of(q.narrow(2, t0, n), p.f, p.omega);
  w.Fk = features_of(k.narrow(2, t0, n), p.f, p.omega);
  w.keep = mask_rows(mask, t0, n);
  w.kf = masked_rows(w.keep, w.Fk.phi);
  w.vm = masked_rows(w.keep, v.narrow(2, t0, n));
  w.c = c.narrow(2, t0, n);
  w.R = R.narrow(2, t0, n);
  const at::Tensor tri = at::ones({n, n}, c.options().dtype(at::kBool)).tril();
  w.on = tri.logical_and((w.R != kNegInf).unsqueeze(-1));
  // The exponent is masked before exp: e^{c_j - R_i} could overflow for j > i.
  w.scale = at::exp(at::where(w.on, w.c.unsqueeze(-2) - w.R.unsqueeze(-1),
                              at::full({}, kNegInf, c.options())));
  return w;
}

// Running maxima R_i = max_{j <= i} c_j, and the key attaining each (the first, as the kernel's
// strict comparison; -1 while no key takes part).
std::pair<at::Tensor, at::Tensor> running_maxima(const at::Tensor& c) {
  const at::Tensor R = std::get<0>(c.cummax(-1));
  const int64_t N = concrete(c, -1);
  const at::Tensor before = at::cat({at::full_like(R.narrow(-1, 0, 1), kNegInf), R.narrow(-1, 0, N - 1)}, -1);
  const at::Tensor idx = at::arange(N, c.options().dtype(at::kLong)).expand_as(R);
  const at::Tensor owner = std::get<0>(at::where(c > before, idx, at::full({}, -1, idx.options())).cummax(-1));
  return {R, owner};
}

// State (S, z) relative to rho ([B, H], -inf: empty) advanced past a chunk whose running maximum
// ends at `end` (as advance_state).
void advance(at::Tensor& S, at::Tensor& z, at::Tensor& rho, const CausalChunk& w) {
  const int64_t n = concrete(w.R, -1);
  const at::Tensor end = w.R.select(-1, n - 1);
  const at::Tensor has_end = end != kNegInf;
  const at::Tensor to = zero_where_not(has_end, end);
  const at::Tensor f = fac(rho, to);
  const at::Tensor kfe = w.kf * fac(w.c, to.unsqueeze(-1)).unsqueeze(-1);
  S = S * f.unsqueeze(-1).unsqueeze(-1) + at::matmul(kfe.transpose(-1, -2), w.vm);
  z = z * f.unsqueeze(-1) + kfe.sum(-2);
  rho = at::where(has_end, end, rho);
}

std::tuple<at::Tensor, at::Tensor> forward_causal(const Problem& p, const at::Tensor& q,
                                                  const at::Tensor& k, const at::Tensor& v,
                                                  const OptTensor& mask, int64_t rows) {
  const int64_t N = p.Nq, C = causal_chunk(p);
  const at::Tensor c = key_exponents(p, k, mask, rows).first;
  const at::Tensor R = std::get<0>(c.cummax(-1));
  at::Tensor out = at::empty({p.B, p.H, N, p.Dv}, v.options());
  at::Tensor inv = at::empty({p.B, p.H, N}, q.options());
  at::Tensor S = at::zeros({p.B, p.H, p.m, p.Dv}, q.options()), z = at::zeros({p.B, p.H, p.m}, q.options());
  at::Tensor rho = at::full({p.B, p.H}, kNegInf, q.options());
  for (int64_t t0 = 0; t0 < N; t0 += C) {
    const int64_t n = std::min(C, N - t0);
    const CausalChunk w = causal_chunk_tensors(p, q, k, v, mask, c, R, t0, n);
    const at::Tensor A = zero_where_not(w.on, at::matmul(w.Fq.phi, w.kf.transpose(-1, -2)) * w.scale);
    at::Tensor num = triangular_matmul(A, w.vm, false, C);
    at::Tensor den = A.sum(-1);
    // Earlier chunks through the state, scaled e^{rho - R_i} (<= 1); none before the first key.
    const at::Tensor f = fac(rho.unsqueeze(-1), w.R);
    const at::Tensor qs = zero_where_not((rho != kNegInf).unsqueeze(-1).unsqueeze(-1), w.Fq.phi * f.unsqueeze(-1));
    num = num + at::matmul(qs, S);
    den = den + at::matmul(qs, z.unsqueeze(-1)).squeeze(-1);
    const at::Tensor iv = inverse_denominator(den, p.eps);
    out.narrow(2, t0, n).copy_(num * iv.unsqueeze(-1));
    inv.narrow(2, t0, n).copy_(iv);
    advance(S, z, rho, w);
  }
  return {out, inv};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_causal(
    const Problem& p, const at::Tensor& go, const at::Tensor& q, const at::Tensor& k,
    const at::Tensor& v, const at::Tensor& out, const at::Tensor& saved_inv, const OptTensor& mask,
    int64_t rows) {
  const int64_t N = p.Nq, C = causal_chunk(p);
  auto [c, argk] = key_exponents(p, k, mask, rows);
  auto [R, owner] = running_maxima(c);
  // A row with no key so far has zero gradients (the forward saved 1/eps there).
  const at::Tensor inv = zero_where_not(R != kNegInf, saved_inv);
  at::Tensor gq = at::empty(concrete_sizes(q), q.options());
  at::Tensor gk = at::empty(concrete_sizes(k), k.options());
  at::Tensor gv = at::empty(concrete_sizes(v), v.options());
  at::Tensor delta_all = at::zeros({p.B, p.H, N}, q.options());

  // Forward scan: grad q = P phi(k) + e^{rho - R_i} gn_i S'^T.
  at::Tensor S = at::zeros({p.B, p.H, p.m, p.Dv}, q.options()), z = at::zeros({p.B, p.H, p.m}, q.options());
  at::Tensor rho = at::full({p.B, p.H}, kNegInf, q.options());
  for (int64_t t0 = 0; t0 < N; t0 += C) {
    const int64_t n = std::min(C, N - t0);
    const CausalChunk w = causal_chunk_tensors(p, q, k, v, mask, c, R, t0, n);
    const at::Tensor iv = inv.narrow(2, t0, n), gz = go.narrow(2, t0, n);
    const at::Tensor dot = (gz * out.narrow(2, t0, n)).sum(-1);
    const at::Tensor gn_v = gz * iv.unsqueeze(-1), gn_d = -dot * iv;
    const at::Tensor delta = gn_d * p.eps;
    delta_all.narrow(2, t0, n).copy_(delta);
    const at::Tensor P = zero_where_not(w.on, (at::matmul(gn_v, w.vm.transpose(-1, -2)) + gn_d.unsqueeze(-1)) * w.scale);
    at::Tensor gphi = triangular_matmul(P, w.kf, false, C);
    const at::Tensor f = zero_where_not((rho != kNegInf).unsqueeze(-1), fac(rho.unsqueeze(-1), w.R));
    const at::Tensor from_state = at::matmul(gn_v, S.transpose(-1, -2)) + gn_d.unsqueeze(-1) * z.unsqueeze(-2);
    gphi = gphi + zero_where_not((rho != kNegInf).unsqueeze(-1).unsqueeze(-1), from_state * f.unsqueeze(-1));
    gq.narrow(2, t0, n).copy_(features_backward(q.narrow(2, t0, n), p.f, p.omega, w.Fq.phi, w.Fq.arg, gphi,
                                                p.exp_map ? delta : at::Tensor()));
    advance(S, z, rho, w);
  }
  // Each row's stabiliser gradient goes to the key that attains its running maximum.
  at::Tensor grad_c;
  if (p.exp_map) {
    grad_c = at::zeros({p.B, p.H, N}, q.options());
    grad_c.scatter_add_(-1, owner.clamp_min(0), zero_where_not(owner >= 0, delta_all));
  }

  // Reverse scan: grad k, grad v with G = sum_{later i} phi(q_i) gn_i^T e^{rho - R_i}.
  at::Tensor G_S = at::zeros({p.B, p.H, p.m, p.Dv}, q.options()), G_z = at::zeros({p.B, p.H, p.m}, q.options());
  const int64_t last = ((N - 1) / C) * C;
  for (int64_t t0 = last; t0 >= 0; t0 -= C) {
    const int64_t n = std::min(C, N - t0);
    const CausalChunk w = causal_chunk_tensors(p, q, k, v, mask, c, R, t0, n);
    const at::Tensor rho_end = R.select(-1, t0 + n - 1);
    const at::Tensor live = rho_end != kNegInf;
    const at::Tensor rho_s = zero_where_not(live, rho_end).unsqueeze(-1);
    const at::Tensor iv = inv.narrow(2, t0, n), gz = go.narrow(2, t0, n);
    const at::Tensor dot = (gz * out.narrow(2, t0, n)).sum(-1);
    const at::Tensor gn_v = gz * iv.unsqueeze(-1), gn_d = -dot * iv;
    const at::Tensor A = zero_where_not(w.on, at::matmul(w.Fq.phi, w.kf.transpose(-1, -2)) * w.scale);
    const at::Tensor P = zero_where_not(w.on, (at::matmul(gn_v, w.vm.transpose(-1, -2)) + gn_d.unsqueeze(-1)) * w.scale);
    const at::Tensor fk = fac(w.c, rho_s).unsqueeze(-1);  // e^{c_j - rho} (0 for masked keys)
    // g phi_j = sum_{i >= j} P_ij phi(q_i) + e^{c_j - rho} G [v_j, 1].
    at::Tensor gphi = triangular_matmul(P.transpose(-1, -2), w.Fq.phi, true, C) +
                      zero_where_not(fk != 0, fk * (at::matmul(w.vm, G_S.transpose(-1, -2)) + G_z.unsqueeze(-2)));
    gphi = masked_rows(w.keep, gphi);
    // g v_j = sum_{i >= j} w_ij gn_i + e^{c_j - rho} phi_j G_S.
    const at::Tensor gvc = triangular_matmul(A.transpose(-1, -2), gn_v, true, C) + at::matmul(w.kf * fk, G_S);
    const at::Tensor g = features_backward(k.narrow(2, t0, n), p.f, p.omega, w.kf,
                                           p.exp_map ? argk.narrow(2, t0, n) : at::Tensor(), gphi,
                                           p.exp_map ? grad_c.narrow(2, t0, n) : at::Tensor());
    at::Tensor keep_all = live.unsqueeze(-1).unsqueeze(-1);
    if (w.keep.defined()) keep_all = keep_all.logical_and(w.keep.unsqueeze(-1));
    gk.narrow(2, t0, n).copy_(zero_where_not(keep_all, g));
    gv.narrow(2, t0, n).copy_(zero_where_not(keep_all, gvc));
    // G <- G e^{rho' - rho} + sum_{i in chunk} phi(q_i) gn_i^T e^{rho' - R_i}, rho' the maximum
    // before this chunk (every R_i here and later is >= rho'); nothing earlier: G is never read.
    if (t0 == 0) break;
    const at::Tensor rho_next = R.select(-1, t0 - 1);
    const at::Tensor f = fac(rho_next, zero_where_not(live, rho_end));
    const at::Tensor fi = fac(rho_next.unsqueeze(-1), w.R);  // e^{rho' - R_i} <= 1
    G_S = G_S * f.unsqueeze(-1).unsqueeze(-1) + at::matmul(w.Fq.phi.transpose(-1, -2), gn_v * fi.unsqueeze(-1));
    G_z = G_z * f.unsqueeze(-1) + at::matmul(w.Fq.phi.transpose(-1, -2), (gn_d * fi).unsqueeze(-1)).squeeze(-1);
    const at::Tensor reset = (rho_next == kNegInf);
    G_S = zero_where_not(reset.logical_not().unsqueeze(-1).unsqueeze(-1), G_S);
    G_z = zero_where_not(reset.logical_not().unsqueeze(-1), G_z);
  }
  return {gq, gk, gv};
}

Problem problem_of(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                   const OptTensor& projection, int64_t feature_map, double eps) {
  Problem p;
  p.f = map_of(feature_map);
  p.omega = projection;
  p.B = concrete(q, 0), p.H = concrete(q, 1), p.Nq = concrete(q, 2), p.Nk = concrete(k, 2);
  p.D = concrete(q, 3), p.Dv = concrete(v, 3);
  p.m = feature_dim(p.f, q, projection);
  p.exp_map = exponential(p.f);
  p.eps = eps;
  return p;
}

// Rows per chunk of the non-causal passes and the feature passes: one chunk's widest tensor
// [B, H, rows, X] within the budget.
int64_t chunk_rows(const Problem& p) {
  return reference_chunk_rows(p.B * p.H * std::max({p.m, p.Dv + 1, p.D}));
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> kernelized_attention_forward(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const OptTensor& mask,
    const OptTensor& projection, int64_t feature_map, bool causal, double eps) {
  if (is_half(q)) {  // computed in float32 (ops/common.h); the inverse denominators stay float32
    auto [out, inv] = kernelized_attention_forward(to_float32(q), to_float32(k), to_float32(v), mask,
                                                   to_float32(projection), feature_map, causal, eps);
    return {as_dtype_of(out, v), inv};
  }
  const Problem p = problem_of(q, k, v, projection, feature_map, eps);
  if (p.B * p.H * p.Nq * p.Dv == 0 || p.Nk == 0 || p.m == 0)  // every weight is 0
    return {at::zeros({p.B, p.H, p.Nq, p.Dv}, v.options()), at::zeros({p.B, p.H, p.Nq}, q.options())};
  return causal ? forward_causal(p, q, k, v, mask, chunk_rows(p)) : forward_full(p, q, k, v, mask, chunk_rows(p));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> kernelized_attention_backward(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const at::Tensor& out, const at::Tensor& inv_denom, const OptTensor& mask,
    const OptTensor& projection, int64_t feature_map, bool causal, double eps) {
  if (is_half(q)) {  // computed in float32 (ops/common.h), returned in the inputs' dtypes
    auto [gq, gk, gv] = kernelized_attention_backward(
        to_float32(grad_out), to_float32(q), to_float32(k), to_float32(v), to_float32(out), inv_denom.to(at::kFloat),
        mask, to_float32(projection), feature_map, causal, eps);
    return {as_dtype_of(gq, q), as_dtype_of(gk, k), as_dtype_of(gv, v)};
  }
  const Problem p = problem_of(q, k, v, projection, feature_map, eps);
  if (p.B * p.H * p.Nq * p.Dv == 0 || p.Nk == 0 || p.m == 0)
    return {at::zeros(concrete_sizes(q), q.options()), at::zeros(concrete_sizes(k), k.options()), at::zeros(concrete_sizes(v), v.options())};
  const at::Tensor go = grad_out.to(q.scalar_type());
  return causal ? backward_causal(p, go, q, k, v, out, inv_denom, mask, chunk_rows(p))
                : backward_full(p, go, q, k, v, out, inv_denom, mask, chunk_rows(p));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> feature_map_forward(const at::Tensor& x,
                                                                   c10::string_view feature_map,
                                                                   const OptTensor& projection,
                                                                   const OptTensor& mask) {
  if (is_half(x)) {  // computed in float32 (ops/common.h); phi in x's dtype, the shift float32
    auto [phi, shift, argmax] = feature_map_forward(to_float32(x), feature_map, to_float32(projection), mask);
    return {as_dtype_of(phi, x), shift, argmax};
  }
  const FeatureMap f = map_named(feature_map);
  const int64_t B = concrete(x, 0), H = concrete(x, 1), N = concrete(x, 2), m = feature_dim(f, x, projection);
  at::Tensor phi, shift = at::zeros({B, H, N}, x.options()), argmax = at::zeros({B, H, N}, x.options().dtype(at::kInt));
  if (B * H * N * m == 0) return {at::zeros({B, H, N, m}, x.options()), shift, argmax};
  Features F = features_of(x, f, projection);
  phi = F.phi;
  if (exponential(f)) {
    shift = F.shift;
    argmax = F.arg.to(at::kInt);
  }
  if (mask && mask->defined()) {  // rows that take no part: phi = 0, shift = 0, argmax = 0
    const at::Tensor keep = mask->unsqueeze(1);
    phi = masked_rows(keep, phi);
    shift = zero_where_not(keep, shift);
    argmax = zero_where_not(keep, argmax);
  }
  return {phi, shift, argmax};
}

at::Tensor feature_map_backward(const at::Tensor& grad_phi, const at::Tensor& grad_shift,
                                const at::Tensor& x, const at::Tensor& phi, const at::Tensor& argmax,
                                c10::string_view feature_map, const OptTensor& projection,
                                const OptTensor& mask) {
  if (is_half(x))  // computed in float32 (ops/common.h), returned in x's dtype
    return as_dtype_of(feature_map_backward(to_float32(grad_phi), to_float32(grad_shift), to_float32(x),
                                            to_float32(phi), argmax, feature_map, to_float32(projection), mask),
                       x);
  const FeatureMap f = map_named(feature_map);
  const std::vector<int64_t> xs = concrete_sizes(x);
  if (c10::multiply_integers(xs) == 0 || concrete(phi, 3) == 0) return at::zeros(xs, x.options());
  at::Tensor gx = features_backward(x, f, projection, phi, exponential(f) ? argmax.to(at::kLong) : at::Tensor(),
                                    grad_phi.to(x.scalar_type()),
                                    exponential(f) ? grad_shift.to(x.scalar_type()) : at::Tensor());
  return mask && mask->defined() ? masked_rows(mask->unsqueeze(1), gx) : gx;
}

}  // namespace longattn::ops::reference
