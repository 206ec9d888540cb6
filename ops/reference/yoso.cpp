// The reference path of YOSO (ops/reference/yoso.h): the fused kernels' formulas
// (kernels/yoso/yoso.h) with ATen operations, device-generic.
//
// Hash codes. The kernel draws each (b, h)'s hash functions from splitmix64 of (seed, b, h) with
// Box–Muller normals (kernels/common/random.h) in double on the CPU; the reference draws them
// with the same generator on the CPU (a few thousand numbers: m·τ·D per (b, h)) and moves them to
// the device, so the projections are the same bits. A code is Σ_t 1[r_tᵀx > 0]·2^t: Gaussian, one
// matmul; Hadamard, the kernel's H·D₃·H·D₂·H·D₁ with the same butterflies (u + w, u − w), so those
// codes are the same bits in every dtype. A Gaussian projection's sum is ordered differently
// from the kernel's GEMM: a sign can differ only where r_tᵀx is within rounding of 0.
//
// LSH tables. Per hash, keys are sorted by code (stable); a key's bucket is the first position of
// its code in that order, a query's is found by binary search (none when its code is −1 or no key
// has it: a spare bucket that stays zero). Tables are index_add over those Nk + 1 buckets, so
// memory does not depend on τ (no 2^τ table) and no host synchronisation is needed.
// The surrogate backward (τ/2m) Σ_h Σ_j B_ij (g_iᵀv_j) k̂_j is the kernel's factored form:
// per bucket M = Σ_j k̂_j v_jᵀ, read by its queries times g_i (and Σ_i q̂_i g_iᵀ read by its keys
// times v_j), in chunks of the value columns so a table is [buckets, ec, D].
//
// YOSO-E. Query rows in chunks of [rows, Nk] blocks: x = (qᵀk)·inv_q·inv_k, θ/π by arccos, or for
// |x| > 0.99 by 2·atan2(‖q̂−k̂‖, ‖q̂+k̂‖) in double from the rows (as the kernel), E = (1 − θ/π)^τ by
// the kernel's squarings, masked pairs 0; the backward with the kernel's exact or surrogate dE/dx.
//
// Peak memory (elements of the compute dtype, E = kReferenceChunkElements = 2^24; sizes B, H, Nq,
// Nk, D, Dv, m, τ; N = max(Nq, Nk)):
//   hash:      codes 4·B·H·m·(Nq + Nk) bytes (the outputs) + hash parameters B·H·m·τ·D (Gaussian;
//              double on the host, then the dtype) + per row chunk (rows·B·H·max(m·τ, Dpad) ≤ E)
//              about 3 E (projection, bits, weighted bits).
//   forward:   B·H·Nq·Dv (output) + per hash chunk (hc·B·H·(N + 1)·Dv ≤ E) the expanded values,
//              the table and the gathered rows, ≤ 3 E, and int64 bucket ids 4·hc·B·H·N ≤ 4 E / Dv.
//   backward:  B·H·(Nq + Nk)·(D + Dv) (gradients, q̂, k̂) + the dv tables as the forward, then
//              for q̂ and k̂ either the colliding pairs (P ≤ E/4 of a hash chunk: a few int64 lists
//              of P entries, ≤ 6·P·8 bytes ≈ 3 E elements of float32, and pair chunks of
//              E/(2D + 2Dv + 4) rows, about E), or, when P > E/4, per hash and column chunk
//              (hc·ec·B·H·(N + 1)·D ≤ E) about 4 E (products, table, gathered rows, einsum).
//   YOSO-E forward: B·H·Nq·Dv + per query chunk (rows·B·H·Nk ≤ E) about 6 E (x, clamp, arccos,
//              1 − θ/π, the power and its scratch); backward: 2·B·H·(Nq+Nk)·D + B·H·Nk·Dv + about 9 E.
//   half precision: float32 copies of q, k, v (and grad_out), B·H·(Nq + 2 Nk)·(D + Dv) more.
// None of them holds an N×N tensor.
#include "ops/reference/yoso.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/common/random.h"
#include "kernels/yoso/yoso.h"
#include "ops/common.h"

namespace longattn::ops::reference {
namespace {

using kernels::kGoldenGamma;
using kernels::splitmix64_mix;
constexpr double kNormEps = 1e-12;      // torch's F.normalize eps, as the kernels
constexpr double kNearParallel = 0.99;  // the kernel's threshold for the atan2 angle

bool nothing_flows(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  return q.numel() == 0 || k.size(2) == 0 || v.size(3) == 0;
}

// ------------------------------------------------------------------------------------ hashing



// The hash parameters of every (b, h), drawn on the host in the kernel's order: Gaussian rows
// [B, H, m·τ, D] or ±1 diagonals [B, H, rotations, 3, Dpad], in double.
at::Tensor hash_params(int64_t B, int64_t H, int64_t D, int64_t tau, int64_t m, uint64_t seed, bool gaussian) {
  const kernels::YosoHadamardShape s(D, tau, m);
  const int64_t per_bh = gaussian ? m * tau * D : s.rotations * 3 * s.dpad;
  at::Tensor out = at::empty({B * H, per_bh}, at::TensorOptions().dtype(at::kDouble));
  auto acc = out.accessor<double, 2>();
  for (int64_t bh = 0; bh < B * H; ++bh) {
    auto g = kernels::yoso_stream(seed, bh / H, bh % H);
    if (gaussian) {
      kernels::NormalStream normal{g};
      for (int64_t i = 0; i < per_bh; ++i) acc[bh][i] = normal.next();
    } else {
      for (int64_t i = 0; i < per_bh; ++i) acc[bh][i] = (g.next() >> 63) ? 1.0 : -1.0;
    }
  }
  return gaussian ? out.view({B, H, m * tau, D}) : out.view({B, H, s.rotations, 3, s.dpad});
}

// The kernel's unnormalised Walsh–Hadamard transform along the last dimension (a power of two).
at::Tensor fwht(at::Tensor y) {
  const int64_t L = y.size(-1);
  std::vector<int64_t> lead(y.sizes().begin(), y.sizes().end() - 1);
  for (int64_t len = 1; len < L; len <<= 1) {
    std::vector<int64_t> shape = lead;
    shape.insert(shape.end(), {L / (2 * len), 2, len});
    at::Tensor v = y.reshape(shape);
    at::Tensor a = v.select(-2, 0), c = v.select(-2, 1);
    y = at::stack({a + c, a - c}, -2).reshape(y.sizes());
  }
  return y;
}

// Codes [B, H, rows, hashes] from sign bits [B, H, rows, hashes, τ].
at::Tensor pack_bits(const at::Tensor& bits, int64_t tau) {
  at::Tensor weights = at::pow(2, at::arange(tau, bits.options().dtype(at::kLong)));
  return (bits.to(at::kLong) * weights).sum(-1).to(at::kInt);
}

// Codes [B, H, m, N] of x [B, H, N, D] (−1 where mask [B, N] is false).
at::Tensor hash_rows(const at::Tensor& x, const at::Tensor& params, const c10::optional<at::Tensor>& mask,
                     int64_t tau, int64_t m, bool gaussian) {
  const int64_t B = x.size(0), H = x.size(1), N = x.size(2), D = x.size(3);
  at::Tensor codes = at::empty({B, H, m, N}, x.options().dtype(at::kInt));
  const kernels::YosoHadamardShape s(D, tau, m);
  const int64_t rows = reference_chunk_rows(B * H * std::max(m * tau, 4 * s.dpad));
  for (int64_t r0 = 0; r0 < N; r0 += rows) {
    const int64_t R = std::min(rows, N - r0);
    at::Tensor xr = x.narrow(2, r0, R);
    at::Tensor c;  // [B, H, R, m]
    if (gaussian) {
      at::Tensor proj = at::matmul(xr, params.transpose(2, 3));  // [B, H, R, m·τ]
      c = pack_bits(proj.gt(0).view({B, H, R, m, tau}), tau);
    } else {
      at::Tensor xp = at::constant_pad_nd(xr, {0, s.dpad - D});
      std::vector<at::Tensor> parts;
      for (int64_t rot = 0; rot < s.rotations; ++rot) {
        at::Tensor d = params.select(2, rot).unsqueeze(2);  // [B, H, 1, 3, Dpad]
        at::Tensor y = xp * d.select(3, 0);
        y = fwht(y);
        y = fwht(y.mul_(d.select(3, 1)));
        y = fwht(y.mul_(d.select(3, 2)));
        const int64_t here = std::min(s.per_rotation, m - rot * s.per_rotation);
        parts.push_back(pack_bits(y.narrow(3, 0, here * tau).gt(0).view({B, H, R, here, tau}), tau));
      }
      c = at::cat(parts, 3);
    }
    codes.narrow(3, r0, R).copy_(c.transpose(2, 3));
  }
  if (mask && mask->defined()) codes.masked_fill_(mask->logical_not().view({B, 1, 1, N}), -1);
  return codes;
}

// ------------------------------------------------------------------------------------ buckets

// Bucket ids of a chunk of hashes, flattened over (b, h, hash) with Nk + 1 buckets each: keys at
// the first position of their code among the sorted key codes, queries at the position of their
// code there, or at the spare bucket Nk (no key has it, or the query is masked: code −1).
struct Buckets {
  at::Tensor key, query;  // [B·H·n·Nk], [B·H·n·Nq] int64
  int64_t count;          // B·H·n·(Nk + 1)
};

Buckets buckets(const at::Tensor& q_codes, const at::Tensor& k_codes) {
  const int64_t B = k_codes.size(0), H = k_codes.size(1), n = k_codes.size(2), Nk = k_codes.size(3);
  at::Tensor kc = k_codes.to(at::kLong), qc = q_codes.to(at::kLong);
  at::Tensor sorted = std::get<0>(kc.sort(c10::optional<bool>(true), -1, false));
  at::Tensor kid = at::searchsorted(sorted, kc);
  at::Tensor pos = at::searchsorted(sorted, qc);
  at::Tensor found = sorted.gather(-1, pos.clamp_max(Nk - 1)).eq(qc).logical_and_(pos.lt(Nk)).logical_and_(qc.ge(0));
  at::Tensor qid = at::where(found, pos, at::full({}, Nk, pos.options()));
  at::Tensor offs = at::arange(B * H * n, kc.options()).mul_(Nk + 1).view({B, H, n, 1});
  return {(kid + offs).view(-1), (qid + offs).view(-1), B * H * n * (Nk + 1)};
}

// rows [B, H, N, W] repeated for n hashes: [B·H·n·N, W].
at::Tensor per_hash(const at::Tensor& rows, int64_t n) {
  const int64_t B = rows.size(0), H = rows.size(1), N = rows.size(2), W = rows.size(3);
  return rows.unsqueeze(2).expand({B, H, n, N, W}).reshape({B * H * n * N, W});
}

// Σ over the chunk's hashes of table[bucket of each row]: [B·H·n·N, W] -> [B, H, N, W].
at::Tensor read_sum(const at::Tensor& table, const at::Tensor& ids, int64_t B, int64_t H, int64_t n, int64_t N) {
  return table.index_select(0, ids).view({B, H, n, N, -1}).sum(2);
}

// inv = 1 / max(‖x‖, eps) per row, [B, H, N, 1], the norm in double as the kernel.
at::Tensor inverse_norms(const at::Tensor& x) {
  return x.to(at::kDouble).pow(2).sum(-1, true).sqrt().clamp_min(kNormEps).reciprocal().to(x.scalar_type());
}

// ∂L/∂x from ∂L/∂x̂ through x̂ = x·inv (kernels' normalize_backward_row).
at::Tensor normalize_backward(const at::Tensor& x, const at::Tensor& inv, const at::Tensor& grad) {
  at::Tensor clamped = inv.to(at::kDouble).ge(1.0 / kNormEps);
  at::Tensor c = (x * grad).sum(-1, true).mul_(inv).mul_(inv);
  return at::where(clamped, grad * inv, (grad - c * x).mul_(inv));
}

// out = base^e by squaring, the kernel's ipow_array order.
at::Tensor ipow(const at::Tensor& base, int64_t e) {
  at::Tensor out = at::ones_like(base);
  at::Tensor s = base.clone();
  for (; e > 0; e >>= 1) {
    if (e & 1) out.mul_(s);
    if (e > 1) s.mul_(s);
  }
  return out;
}

// ------------------------------------------------------------------------------------ YOSO-E

// What a query chunk's [B, H, r, Nk] block needs: cosines and the angle over π.
struct CosineBlock {
  at::Tensor x, a;
};

CosineBlock cosines(const at::Tensor& qc, const at::Tensor& iq, const at::Tensor& k, const at::Tensor& ik) {
  at::Tensor x = at::matmul(qc, k.transpose(2, 3)).mul_(iq * ik.transpose(2, 3));
  const at::Tensor inv_pi = at::scalar_tensor(1.0 / M_PI, x.options());
  at::Tensor a = at::acos(x.clamp(-1, 1)).mul_(inv_pi);
  // Near q ∥ ±k the kernel takes the angle from the rows in double (arccos of a rounded cosine
  // loses half the digits there); these pairs are few, listed with one host synchronisation.
  at::Tensor near = x.abs().gt(kNearParallel).nonzero();  // [P, 4]: b, h, row, key
  const int64_t P = near.size(0), D = qc.size(3);
  const int64_t step = reference_chunk_rows(4 * D);
  for (int64_t p0 = 0; p0 < P; p0 += step) {
    at::Tensor idx = near.narrow(0, p0, std::min(step, P - p0));
    at::Tensor b = idx.select(1, 0), h = idx.select(1, 1), r = idx.select(1, 2), c = idx.select(1, 3);
    at::Tensor qd = qc.index({b, h, r}).to(at::kDouble) * iq.index({b, h, r}).to(at::kDouble);
    at::Tensor kd = k.index({b, h, c}).to(at::kDouble) * ik.index({b, h, c}).to(at::kDouble);
    at::Tensor diff = (qd - kd).pow(2).sum(-1).sqrt(), sum = (qd + kd).pow(2).sum(-1).sqrt();
    a.index_put_({b, h, r, c}, at::atan2(diff, sum).mul_(2.0).div_(M_PI).to(a.scalar_type()));
  }
  return {x, a};
}

// [B, 1, r, Nk] bool: the pair takes part (key, and query in self-attention), or undefined.
at::Tensor pair_mask(const c10::optional<at::Tensor>& mask, int64_t Nq, int64_t i0, int64_t r) {
  if (!mask || !mask->defined()) return at::Tensor();
  const at::Tensor& m = *mask;
  at::Tensor on = m.view({m.size(0), 1, 1, m.size(1)});
  if (Nq == m.size(1)) on = on.logical_and(m.narrow(1, i0, r).view({m.size(0), 1, r, 1}));
  return on;
}

at::Tensor masked(const at::Tensor& t, const at::Tensor& on) {
  return on.defined() ? at::where(on, t, at::zeros({}, t.options())) : t;
}

int64_t query_rows(const at::Tensor& q, const at::Tensor& k) {
  return reference_chunk_rows(q.size(0) * q.size(1) * k.size(2));
}

// ∂L/∂q̂ and ∂L/∂k̂ of the surrogate, pair by pair: for every colliding (query i, key j) of the
// chunk's hashes, w = g_i·v_j, then dq_i += w k̂_j and dk_j += w q̂_i. The per-bucket tables below
// cost O(N D Dv) per hash whatever the collisions; the pairs cost O(P (D + Dv)), and with
// τ ≈ log2 N there are about N pairs per hash, so this is the fast way in the usual case (a 200×
// difference at N = 4096, D = Dv = 64). Degenerate inputs (many equal codes: P up to N² per hash)
// would need more than the budget for the pair lists and take the tables instead (false).
// Pairs are listed from the keys grouped by bucket (a stable sort of their bucket ids) and each
// query's count and first position in that order; one host read of P sizes the lists.
bool colliding_pairs_backward(const Buckets& bk, const at::Tensor& g, const at::Tensor& v, const at::Tensor& qh,
                              const at::Tensor& kh, int64_t n, at::Tensor& dq, at::Tensor& dk) {
  const int64_t B = qh.size(0), H = qh.size(1), Nq = qh.size(2), Nk = kh.size(2), D = qh.size(3), Dv = v.size(3);
  at::Tensor counts = at::bincount(bk.key, {}, bk.count);
  at::Tensor starts = counts.cumsum(0).sub_(counts);
  at::Tensor per_query = counts.index_select(0, bk.query);
  const int64_t P = per_query.sum().item<int64_t>();
  constexpr int64_t kMaxPairs = kReferenceChunkElements / 4;  // 3 int64 lists: 96 bytes per 4 pairs
  if (P > kMaxPairs) return false;
  if (P == 0) return true;
  at::Tensor order = std::get<1>(bk.key.sort(/*stable=*/true, 0, false));
  at::Tensor flat_q = at::arange(bk.query.size(0), bk.query.options()).repeat_interleave(per_query, 0, P);
  at::Tensor first = per_query.cumsum(0).sub_(per_query).repeat_interleave(per_query, 0, P);
  at::Tensor key_pos = starts.index_select(0, bk.query).repeat_interleave(per_query, 0, P)
                           .add_(at::arange(P, flat_q.options())).sub_(first);
  first.reset();
  at::Tensor flat_k = order.index_select(0, key_pos);
  key_pos.reset();
  // Flat per-hash indices ((b H + h) n + hash) N + i to rows (b H + h) N + i of [B H N, ·].
  at::Tensor q_row = flat_q.div(n * Nq, "floor").mul_(Nq).add_(flat_q.remainder(Nq));
  at::Tensor k_row = flat_k.div(n * Nk, "floor").mul_(Nk).add_(flat_k.remainder(Nk));
  flat_q.reset();
  flat_k.reset();
  const at::Tensor G = g.reshape({B * H * Nq, Dv}), V = v.reshape({B * H * Nk, Dv});
  const at::Tensor Qh = qh.reshape({B * H * Nq, D}), Kh = kh.reshape({B * H * Nk, D});
  at::Tensor dq2 = dq.view({B * H * Nq, D}), dk2 = dk.view({B * H * Nk, D});
  const int64_t chunk = std::max<int64_t>(1, kReferenceChunkElements / (2 * D + 2 * Dv + 4));
  for (int64_t p0 = 0; p0 < P; p0 += chunk) {
    const int64_t np = std::min(chunk, P - p0);
    const at::Tensor qi = q_row.narrow(0, p0, np), kj = k_row.narrow(0, p0, np);
    const at::Tensor w = (G.index_select(0, qi) * V.index_select(0, kj)).sum(-1, true);
    dq2.index_add_(0, qi, Kh.index_select(0, kj).mul_(w));
    dk2.index_add_(0, kj, Qh.index_select(0, qi).mul_(w));
  }
  return true;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> yoso_hash(const at::Tensor& q, const at::Tensor& k,
                                             const c10::optional<at::Tensor>& mask, int64_t hash_bits,
                                             int64_t num_hashes, int64_t seed, int64_t hashing) {
  if (is_half(q)) return yoso_hash(to_float32(q), to_float32(k), mask, hash_bits, num_hashes, seed, hashing);
  const int64_t B = q.size(0), H = q.size(1);
  if (q.numel() == 0 || k.size(2) == 0) {
    auto opts = q.options().dtype(at::kInt);
    return {at::full({B, H, num_hashes, q.size(2)}, -1, opts), at::full({B, H, num_hashes, k.size(2)}, -1, opts)};
  }
  const bool gaussian = hashing == int64_t(kernels::YosoHashing::gaussian);
  // Drawn in double and rounded to the dtype, as the kernel's parameters.
  at::Tensor params = hash_params(B, H, q.size(3), hash_bits, num_hashes, uint64_t(seed), gaussian)
                          .to(q.options());
  // The key mask masks the queries too in self-attention (Nq == Nk), as in the kernel.
  const c10::optional<at::Tensor> qmask = q.size(2) == k.size(2) ? mask : c10::nullopt;
  return {hash_rows(q, params, qmask, hash_bits, num_hashes, gaussian),
          hash_rows(k, params, mask, hash_bits, num_hashes, gaussian)};
}

at::Tensor yoso_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                        const at::Tensor& q_codes, const at::Tensor& k_codes, int64_t hash_bits) {
  if (is_half(q))
    return as_dtype_of(yoso_forward(to_float32(q), to_float32(k), to_float32(v), q_codes, k_codes, hash_bits), v);
  const int64_t B = q.size(0), H = q.size(1), Nq = q.size(2), Nk = k.size(2), Dv = v.size(3);
  at::Tensor out = at::zeros({B, H, Nq, Dv}, v.options());
  if (nothing_flows(q, k, v)) return out;
  const int64_t m = q_codes.size(2);
  const int64_t hc = std::min(m, reference_chunk_rows(B * H * (std::max(Nq, Nk) + 1) * Dv));
  for (int64_t h0 = 0; h0 < m; h0 += hc) {
    const int64_t n = std::min(hc, m - h0);
    Buckets bk = buckets(q_codes.narrow(2, h0, n), k_codes.narrow(2, h0, n));
    at::Tensor table = at::zeros({bk.count, Dv}, v.options()).index_add_(0, bk.key, per_hash(v, n));
    out.add_(read_sum(table, bk.query, B, H, n, Nq));
  }
  return out.mul_(at::ones({}, v.options()).div_(double(m)));  // T(1) / T(m), as the kernel
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> yoso_backward_lsh(const at::Tensor& grad_out, const at::Tensor& q,
                                                                 const at::Tensor& k, const at::Tensor& v,
                                                                 const at::Tensor& q_codes,
                                                                 const at::Tensor& k_codes, int64_t hash_bits) {
  if (is_half(q)) {
    auto [gq, gk, gv] = yoso_backward_lsh(to_float32(grad_out), to_float32(q), to_float32(k), to_float32(v),
                                          q_codes, k_codes, hash_bits);
    return {as_dtype_of(gq, q), as_dtype_of(gk, k), as_dtype_of(gv, v)};
  }
  const int64_t B = q.size(0), H = q.size(1), Nq = q.size(2), Nk = k.size(2), D = q.size(3), Dv = v.size(3);
  at::Tensor dq = at::zeros(q.sizes(), q.options()), dk = at::zeros(k.sizes(), k.options()),
             dv = at::zeros(v.sizes(), v.options());
  if (nothing_flows(q, k, v)) return {dq, dk, dv};
  const at::Tensor g = grad_out;
  const at::Tensor inv_q = inverse_norms(q), inv_k = inverse_norms(k);
  const at::Tensor qh = q * inv_q, kh = k * inv_k;
  const int64_t m = q_codes.size(2), N1 = std::max(Nq, Nk) + 1;
  const int64_t hc = std::min(m, reference_chunk_rows(B * H * N1 * std::max(D, Dv)));
  const int64_t ec = std::min(Dv, reference_chunk_rows(hc * B * H * N1 * D));
  for (int64_t h0 = 0; h0 < m; h0 += hc) {
    const int64_t n = std::min(hc, m - h0);
    Buckets bk = buckets(q_codes.narrow(2, h0, n), k_codes.narrow(2, h0, n));
    // ∂L/∂v_j = Σ_h Σ_{i in j's bucket} g_i
    at::Tensor gt = at::zeros({bk.count, Dv}, g.options()).index_add_(0, bk.query, per_hash(g, n));
    dv.add_(read_sum(gt, bk.key, B, H, n, Nk));
    if (colliding_pairs_backward(bk, g, v, qh, kh, n, dq, dk)) continue;
    for (int64_t e0 = 0; e0 < Dv; e0 += ec) {
      const int64_t ne = std::min(ec, Dv - e0);
      const at::Tensor ge = g.narrow(3, e0, ne), ve = v.narrow(3, e0, ne);
      // ∂L/∂q̂_i = Σ_h Σ_e g_i[e] M_b[e], M_b[e] = Σ_{j in bucket b} v_j[e] k̂_j
      at::Tensor vk = (ve.unsqueeze(4) * kh.unsqueeze(3)).view({B, H, Nk, ne * D});
      at::Tensor M = at::zeros({bk.count, ne * D}, q.options()).index_add_(0, bk.key, per_hash(vk, n));
      vk.reset();
      at::Tensor Mq = M.index_select(0, bk.query).view({B, H, n, Nq, ne, D});
      M.reset();
      dq.add_(at::einsum("bhnqed,bhqe->bhqd", {Mq, ge}));
      Mq.reset();
      // ∂L/∂k̂_j = Σ_h Σ_e v_j[e] Q_b[e], Q_b[e] = Σ_{i in bucket b} g_i[e] q̂_i
      at::Tensor gq = (ge.unsqueeze(4) * qh.unsqueeze(3)).view({B, H, Nq, ne * D});
      at::Tensor Q = at::zeros({bk.count, ne * D}, q.options()).index_add_(0, bk.query, per_hash(gq, n));
      gq.reset();
      at::Tensor Qk = Q.index_select(0, bk.key).view({B, H, n, Nk, ne, D});
      Q.reset();
      dk.add_(at::einsum("bhnked,bhke->bhkd", {Qk, ve}));
    }
  }
  const at::Tensor one = at::ones({}, q.options());
  const at::Tensor inv_m = one / double(m), cs = (one * double(hash_bits)) / (one * double(2 * m));
  dv.mul_(inv_m);
  return {normalize_backward(q, inv_q, dq.mul_(cs)), normalize_backward(k, inv_k, dk.mul_(cs)), dv};
}

at::Tensor yoso_expectation_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                    const c10::optional<at::Tensor>& mask, int64_t hash_bits) {
  if (is_half(q))
    return as_dtype_of(yoso_expectation_forward(to_float32(q), to_float32(k), to_float32(v), mask, hash_bits), v);
  const int64_t B = q.size(0), H = q.size(1), Nq = q.size(2), Dv = v.size(3);
  at::Tensor out = at::zeros({B, H, Nq, Dv}, v.options());
  if (nothing_flows(q, k, v)) return out;
  const at::Tensor inv_q = inverse_norms(q), inv_k = inverse_norms(k);
  const int64_t rows = query_rows(q, k);
  for (int64_t i0 = 0; i0 < Nq; i0 += rows) {
    const int64_t r = std::min(rows, Nq - i0);
    CosineBlock blk = cosines(q.narrow(2, i0, r), inv_q.narrow(2, i0, r), k, inv_k);
    blk.x.reset();
    at::Tensor e = masked(ipow(blk.a.neg_().add_(1), hash_bits), pair_mask(mask, Nq, i0, r));
    out.narrow(2, i0, r).copy_(at::matmul(e, v));
  }
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> yoso_expectation_backward(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const c10::optional<at::Tensor>& mask, int64_t hash_bits, int64_t derivative) {
  if (is_half(q)) {
    auto [gq, gk, gv] = yoso_expectation_backward(to_float32(grad_out), to_float32(q), to_float32(k),
                                                  to_float32(v), mask, hash_bits, derivative);
    return {as_dtype_of(gq, q), as_dtype_of(gk, k), as_dtype_of(gv, v)};
  }
  const int64_t Nq = q.size(2);
  at::Tensor dq = at::zeros(q.sizes(), q.options()), dk = at::zeros(k.sizes(), k.options()),
             dv = at::zeros(v.sizes(), v.options());
  if (nothing_flows(q, k, v)) return {dq, dk, dv};
  const at::Tensor inv_q = inverse_norms(q), inv_k = inverse_norms(k);
  const at::Tensor inv_pi = at::scalar_tensor(1.0 / M_PI, q.options());
  const bool surrogate = derivative == int64_t(kernels::YosoDerivative::surrogate);
  const int64_t rows = query_rows(q, k);
  for (int64_t i0 = 0; i0 < Nq; i0 += rows) {
    const int64_t r = std::min(rows, Nq - i0);
    const at::Tensor qc = q.narrow(2, i0, r), iq = inv_q.narrow(2, i0, r), g = grad_out.narrow(2, i0, r);
    CosineBlock blk = cosines(qc, iq, k, inv_k);
    const at::Tensor on = pair_mask(mask, Nq, i0, r);
    at::Tensor e = ipow(blk.a.neg_().add_(1), hash_bits);
    blk.a.reset();
    at::Tensor w;
    if (surrogate) {
      w = e * at::scalar_tensor(0.5 * double(hash_bits), q.options());
    } else {
      // τ (1 − θ/π)^{τ−1} / (π √(1 − x²)) at x clamped to |x| ≤ 1 − δ (unbounded at ±1).
      const double lim = 1.0 - kernels::kYosoDerivativeClamp;
      at::Tensor xc = blk.x.clamp(-lim, lim);
      blk.x.reset();
      at::Tensor t = at::acos(xc).mul_(inv_pi).neg_().add_(1);
      at::Tensor scale = (at::scalar_tensor(double(hash_bits), q.options()) * inv_pi) / (1 - xc * xc).sqrt_();
      xc.reset();
      w = ipow(t, hash_bits - 1).mul_(scale);
    }
    blk.x.reset();
    e = masked(e, on);
    w = masked(w, on);
    dv.add_(at::matmul(e.transpose(2, 3), g));
    e.reset();
    at::Tensor sv = at::matmul(g, v.transpose(2, 3)).mul_(w);  // S_ij W_ij
    w.reset();
    dq.narrow(2, i0, r).copy_(at::matmul(sv * inv_k.transpose(2, 3), k));
    dk.add_(at::matmul(sv.mul_(iq).transpose(2, 3), qc));
  }
  return {normalize_backward(q, inv_q, dq), normalize_backward(k, inv_k, dk), dv};
}

}  // namespace longattn::ops::reference
