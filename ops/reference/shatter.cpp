// Reference path of shatter_attention: the fused kernels' formula (kernels/shatter/shatter.h)
// written with ATen operations, for any device; see ops/common.h (takes_reference_path).
//
//   out_i = sum_p sum_j a_ij partition[p, j - i + N - 1] v[p]_j,
//   a = softmax over the keys taking part of scale q.k (lse kept), or sigmoid(scale q.k) (lse 0).
//
// Method: query chunks of n rows against full key rows (L = N keys, or i0 + n when causal), one
// part at a time: the chunk's weights a [B, n, L], then per part p the weight tile a ∘ Π_p (the
// partition's Toeplitz tile, ops/reference/softmax_attention.h relative_tile) times V_p. The
// backward recomputes a from the lse, then per part g V_pᵀ gives dA += Π_p ∘ g V_pᵀ, the
// partition gradient (diagonal sums of a ∘ g V_pᵀ over the batch) and dV_p = (a ∘ Π_p)ᵀ g;
// dS = scale a (dA - g.out) (softmax) or scale dA a (1 - a) (sigmoid), dq = dS k, dk = dSᵀ q.
// Causal chunks split their keys like the softmax reference (allowed_pairs_matmul on the
// 128 x 128 blocks the diagonal cuts), and g V_pᵀ is zeroed at future pairs before any use, so an
// inf or NaN in a future row reaches no earlier query's output or gradient.
//
// Peak memory, in elements of the compute dtype beyond the inputs, the outputs and what autograd
// saves (float32 for half-precision inputs, which adds float32 copies of the inputs). n =
// max(1, 2^24 / (B N)) rows per chunk, L <= N its keys, E = B n L <= max(2^24, B N) one part's
// weight tile; the partition tile and the buffer of its gradient's diagonal sums hold
// n (L + n - 1) <= 2 E / B:
//   forward:  2 E (a, a ∘ Π_p) + 2 E / B (Π_p)                                   <= 4 E
//   backward: 3 E (a, dA, g V_pᵀ) + 2 E / B (Π_p) + 2 E / B (diagonal sums)
//             + E / B (the sum over the batch, B > 1)                            <= 7 E
// each + O(B n (D + Dv) + B 128^2). Never an N x N tensor. Measured
// (tests/python/test_reference_softmax.py, N = 16384, B = P = 1, D = 16, Dv = 8, float32, causal,
// E = 64 MiB): forward 209 MiB (3.3 E), forward + backward 379 MiB (5.9 E), against 1 GiB for the
// weights of one part.
#include "ops/reference/shatter.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <limits>

#include "ops/reference/softmax_attention.h"

namespace longattn::ops::reference {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr int64_t kSigmoid = 1;  // kernels::ShatterActivation::sigmoid

bool degenerate(const at::Tensor& q, const at::Tensor& v) {
  return q.size(0) == 0 || q.size(1) == 0 || v.size(1) == 0 || v.size(3) == 0;
}

// scale q.k of queries [i0, i0 + n) against keys [0, L), -inf where the key does not take part.
at::Tensor chunk_scores(const at::Tensor& q, const at::Tensor& k, const at::Tensor& key_masked, bool causal,
                        double scale, int64_t i0, int64_t n, int64_t L) {
  at::Tensor s = at::matmul(q.narrow(1, i0, n), k.narrow(1, 0, L).transpose(-2, -1));
  s.mul_(scale);
  if (key_masked.defined()) s.masked_fill_(key_masked.narrow(-1, 0, L), -kInf);
  if (causal) s.narrow(-1, i0, n).masked_fill_(lower_triangle(n, s).logical_not(), -kInf);
  return s;
}

at::Tensor key_masked_of(const OptTensor& mask, int64_t B, int64_t N) {
  return given(mask) ? mask->logical_not().view({B, 1, N}) : at::Tensor();
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> shatter_attention_forward(const at::Tensor& q, const at::Tensor& k,
                                                             const at::Tensor& v, const at::Tensor& partition,
                                                             const OptTensor& mask, int64_t activation,
                                                             bool causal, double scale) {
  if (is_half(q)) {  // computed in float32 like the CPU kernel; lse stays float32
    auto [out, lse] = shatter_attention_forward(to_float32(q), to_float32(k), to_float32(v), to_float32(partition),
                                                mask, activation, causal, scale);
    return {as_dtype_of(out, v), lse};
  }
  const bool sigmoid = activation == kSigmoid;
  const int64_t B = q.size(0), N = q.size(1), P = v.size(1), Dv = v.size(3);
  at::Tensor out = at::zeros({B, N, Dv}, v.options());
  at::Tensor lse = at::full({B, N}, sigmoid ? 0.0 : -kInf, q.options());
  if (degenerate(q, v)) return {out, lse};
  const at::Tensor key_masked = key_masked_of(mask, B, N);
  const int64_t rows = reference_chunk_rows(B * N);
  for (int64_t i0 = 0; i0 < N; i0 += rows) {
    const int64_t n = std::min(rows, N - i0), L = causal ? i0 + n : N;
    at::Tensor a = chunk_scores(q, k, key_masked, causal, scale, i0, n, L);
    at::Tensor m, l;
    if (sigmoid) {
      a.sigmoid_();  // sigmoid(-inf) = 0: keys not taking part get weight 0
    } else {
      m = std::get<0>(a.max(-1, true));
      m.masked_fill_(m == -kInf, 0);  // a row with no key: exp(-inf - 0) = 0, not NaN
      a.sub_(m).exp_();
      l = a.sum(-1, true);
    }
    at::Tensor acc = at::zeros({B, n, Dv}, out.options());
    for (int64_t p = 0; p < P; ++p) {
      const at::Tensor w = a * relative_tile(partition.narrow(0, p, 1), N, i0, n, L);
      acc.add_(rows_times(w, v.select(1, p).narrow(1, 0, L), causal, i0));
    }
    if (!sigmoid) {
      const at::Tensor none = l == 0;
      acc.div_(l).masked_fill_(none, 0);
      lse.narrow(1, i0, n).copy_(m.add_(l.log()).masked_fill_(none, -kInf).squeeze(-1));
    }
    out.narrow(1, i0, n).copy_(acc);
  }
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> shatter_attention_backward(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const at::Tensor& partition, const at::Tensor& out, const at::Tensor& lse, const OptTensor& mask,
    int64_t activation, bool causal, double scale) {
  if (is_half(q)) {  // computed in float32, returned in the inputs' dtypes
    auto [gq, gk, gv, gp] = shatter_attention_backward(to_float32(grad_out), to_float32(q), to_float32(k),
                                                       to_float32(v), to_float32(partition), to_float32(out),
                                                       lse, mask, activation, causal, scale);
    return {as_dtype_of(gq, q), as_dtype_of(gk, k), as_dtype_of(gv, v), as_dtype_of(gp, partition)};
  }
  const bool sigmoid = activation == kSigmoid;
  const int64_t B = q.size(0), N = q.size(1), P = v.size(1);
  at::Tensor gq = at::zeros_like(q, at::MemoryFormat::Contiguous);
  at::Tensor gk = at::zeros_like(k, at::MemoryFormat::Contiguous);
  at::Tensor gv = at::zeros_like(v, at::MemoryFormat::Contiguous);
  at::Tensor gp = at::zeros_like(partition, at::MemoryFormat::Contiguous);
  if (degenerate(q, v)) return {gq, gk, gv, gp};
  const at::Tensor key_masked = key_masked_of(mask, B, N);
  const int64_t rows = reference_chunk_rows(B * N);
  for (int64_t i0 = 0; i0 < N; i0 += rows) {
    const int64_t n = std::min(rows, N - i0), L = causal ? i0 + n : N;
    const at::Tensor go = grad_out.narrow(1, i0, n);
    at::Tensor a = chunk_scores(q, k, key_masked, causal, scale, i0, n, L);
    if (sigmoid) {
      a.sigmoid_();
    } else {
      // A row with no key has lse = -inf: shift it by +inf so that its weights are exp(-inf) = 0.
      at::Tensor shift = lse.narrow(1, i0, n).unsqueeze(-1);
      a.sub_(shift.masked_fill(shift == -kInf, kInf)).exp_();
    }
    at::Tensor da = at::zeros_like(a);
    for (int64_t p = 0; p < P; ++p) {
      const at::Tensor vp = v.select(1, p).narrow(1, 0, L);
      const at::Tensor pi = relative_tile(partition.narrow(0, p, 1), N, i0, n, L);
      at::Tensor gvp = at::matmul(go, vp.transpose(-2, -1));  // g V_pᵀ
      // Future pairs have a = 0, but g V_pᵀ there may be inf or NaN (a future value).
      if (causal) gvp.narrow(-1, i0, n).masked_fill_(lower_triangle(n, gvp).logical_not(), 0);
      da.addcmul_(pi, gvp);
      gvp.mul_(a);
      add_relative_tile(gp.narrow(0, p, 1), (B == 1 ? gvp.select(0, 0) : gvp.sum(0)).unsqueeze(0), N, i0);
      gvp.reset();
      gv.select(1, p).narrow(1, 0, L).add_(keys_times(a * pi, go, causal, i0));
    }
    if (sigmoid) {  // dS = scale dA a (1 - a)
      da.mul_(a);
      da.mul_(a.neg_().add_(1));
    } else {  // dS = scale a (dA - g.out)
      da.sub_((go * out.narrow(1, i0, n)).sum(-1, true)).mul_(a);
    }
    a.reset();
    da.mul_(scale);
    if (causal) da.narrow(-1, i0, n).masked_fill_(lower_triangle(n, da).logical_not(), 0);
    gq.narrow(1, i0, n).copy_(rows_times(da, k.narrow(1, 0, L), causal, i0));
    gk.narrow(1, 0, L).add_(keys_times(da, q.narrow(1, i0, n), causal, i0));
  }
  return {gq, gk, gv, gp};
}

}  // namespace longattn::ops::reference
