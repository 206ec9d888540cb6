// Reference path of softmax_attention: the fused kernel's formula (kernels/softmax_attention)
// written with ATen operations, for any device; see ops/common.h (takes_reference_path).
//
// Method: query chunks of n rows against full key rows. A chunk's logits [B, H, n, L] (L = Nk,
// or i0 + n when causal: the keys wholly in the future of the chunk are never read) get the
// bias tile, -inf at masked keys and at future keys, then the row max, exp and sum give the
// chunk's output and lse (natural log, max included: lse = m + log(sum exp(s - m)), as the
// kernel's base-2 ref + log2(l) times ln 2). A row with no key gets out = 0 and lse = -inf. The
// backward recomputes P = exp(s - lse) per chunk, then dV += P^T dO, dP = dO V^T,
// dS = P (dP - rowsum(dO * O)), dQ = scale dS K, dK += scale dS^T Q and the bias gradient as
// the diagonal sums of dS over the batch.
//
// Causal chunks: keys [0, i0) lie wholly in the past of every row of the chunk (plain
// matmuls); keys [i0, i0 + n) are cut by the diagonal, and in 128-row tiles only each tile's own
// 128 x 128 block goes through allowed_pairs_matmul, so that an inf or NaN in a future key,
// value, query or output-gradient row never reaches an earlier row's output or gradient
// (0 * NaN = NaN in a matmul); dP is zeroed at future pairs before it is used.
//
// Peak memory, in elements of the compute dtype beyond the inputs, the outputs and what autograd
// saves (float32 for half-precision inputs, which adds float32 copies of q, k, v, out and
// grad_out). n = max(1, 2^24 / (B H Nk)) rows per chunk (ops::reference_chunk_rows), L <= Nk its
// keys, E = B H n L <= max(2^24, B H Nk) a chunk's logits, the largest temporary; the bias tile
// and the buffer of its gradient's diagonal sums hold H n (L + n - 1) <= 2 E / B:
//   forward:  E + 2 E / B (logits, bias tile)                              <= 3 E
//   backward: max(E + 2 E / B (logits, bias tile), 2 E (P, dS),
//                 E + 3 E / B (dS, its sum over the batch when B > 1, the diagonal sums))
//                                                                          <= 3 E
// each + O(B H n (D + Dv) + B H 128^2) for a chunk's rows and the diagonal tiles. Never an
// N x N tensor. Measured (tests/python/test_reference_softmax.py, N = 16384, B = H = 1, D = 16,
// float32, causal with bias, E = 64 MiB): forward 145 MiB (2.3 E), forward + backward 184 MiB
// (2.9 E), against 1 GiB for the logits of one head.
#include "ops/reference/softmax_attention.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace longattn::ops::reference {

at::Tensor allowed_pairs_matmul(const at::Tensor& a, const at::Tensor& x, const at::Tensor& allowed) {
  const auto dtype = a.scalar_type();
  const int64_t M = a.size(-2), dx = x.size(-1);
  // Weights outside the allowed pairs are zeroed and pairs of weight 0 are skipped, as the
  // kernels' guarded products (kernels/common/guarded_products.h) do.
  const at::Tensor w = a.masked_fill(allowed.logical_not(), 0);
  at::Tensor y = at::matmul(w, x.masked_fill(at::isfinite(x).logical_not(), 0));
  // Which non-finite entries of x each row reaches through a positive or a negative weight.
  const at::Tensor marks = at::cat({at::isnan(x), at::isposinf(x), at::isneginf(x)}, -1).to(dtype);
  const at::Tensor signs = at::cat({w > 0, w < 0}, -2).to(dtype);
  const at::Tensor reach = at::matmul(signs, marks) > 0;  // [..., 2M, 3 dx]
  auto part = [&](int64_t sign, int64_t kind) { return reach.narrow(-2, sign * M, M).narrow(-1, kind * dx, dx); };
  const at::Tensor up = part(0, 1).logical_or(part(1, 2));    // w > 0 with +inf, w < 0 with -inf
  const at::Tensor down = part(0, 2).logical_or(part(1, 1));
  const at::Tensor nan = at::isnan(y).logical_or(part(0, 0)).logical_or(part(1, 0)).logical_or(up.logical_and(down));
  const double inf = std::numeric_limits<double>::infinity();
  y.masked_fill_(up, inf);
  y.masked_fill_(down, -inf);
  y.masked_fill_(nan, std::numeric_limits<double>::quiet_NaN());
  return y;
}

at::Tensor relative_tile(const at::Tensor& table, int64_t N, int64_t i0, int64_t rows, int64_t L) {
  // Row c (query i0 + c) reads table[:, N - 1 - i0 - c + j]: the segment that starts at the last
  // row's first offset, shifted left by one more per row. Copied once into every row of a
  // buffer of row length W, it is read with row stride W - 1 (a flip or a negative stride would
  // leave the tile in a layout that later elementwise operations walk slowly).
  const int64_t R = table.size(0), W = L + rows - 1;
  const at::Tensor segment = table.narrow(1, N - i0 - rows, W);
  const at::Tensor repeated = segment.unsqueeze(1).expand({R, rows, W}).contiguous();
  // (contiguous() may return the segment itself, a view into the table: the offset is absolute.)
  return repeated.as_strided({R, rows, L}, {repeated.stride(0), W - 1, 1}, repeated.storage_offset() + rows - 1);
}

void add_relative_tile(const at::Tensor& grad, const at::Tensor& g, int64_t N, int64_t i0) {
  const int64_t R = g.size(0), rows = g.size(1), L = g.size(2);
  if (R == 0 || rows == 0 || L == 0) return;
  // Row c of g is laid at offset rows - 1 of its row in a zero buffer of row length
  // W = L + rows - 1 (plus a zero row at the end); reading that buffer with row stride W + 1
  // shifts row c left by c, so column t of the strided view holds g[c, t + c - (rows - 1)]
  // (0 outside g), and its column sums are g's sums along the diagonals j - c = t - (rows - 1).
  const int64_t W = L + rows - 1;
  at::Tensor buffer = at::zeros({R, rows + 1, W}, g.options());
  buffer.narrow(1, 0, rows).narrow(2, rows - 1, L).copy_(g);
  const at::Tensor skewed = buffer.as_strided({R, rows, W}, {(rows + 1) * W, W + 1, 1});
  // Offset j - i + N - 1 with i = i0 + c is t + N - i0 - rows.
  grad.narrow(1, N - i0 - rows, W).add_(skewed.sum(1));
}

namespace {
constexpr double kInf = std::numeric_limits<double>::infinity();
// Rows of the causal diagonal tiles, the only products that need allowed_pairs_matmul: small
// enough that their extra work (a few t x t 0/1 products per t rows) stays a few percent.
constexpr int64_t kDiagonalTile = 128;
}  // namespace

at::Tensor lower_triangle(int64_t n, const at::Tensor& like) {
  return at::ones({n, n}, like.options().dtype(at::kBool)).tril();
}

at::Tensor rows_times(const at::Tensor& w, const at::Tensor& x, bool causal, int64_t i0) {
  if (!causal) return at::matmul(w, x);
  // Row tiles of kDiagonalTile: keys before the tile's first row are in its past (plain matmul),
  // its own t x t block is the only one the diagonal cuts.
  const int64_t n = w.size(-2);
  const at::Tensor allowed = lower_triangle(std::min(kDiagonalTile, n), w);
  std::vector<at::Tensor> tiles;
  for (int64_t r0 = 0; r0 < n; r0 += kDiagonalTile) {
    const int64_t t = std::min(kDiagonalTile, n - r0), d0 = i0 + r0;
    const at::Tensor wr = w.narrow(-2, r0, t);
    at::Tensor y = allowed_pairs_matmul(wr.narrow(-1, d0, t), x.narrow(-2, d0, t), allowed.narrow(0, 0, t).narrow(1, 0, t));
    if (d0 > 0) y.add_(at::matmul(wr.narrow(-1, 0, d0), x.narrow(-2, 0, d0)));
    tiles.push_back(std::move(y));
  }
  return at::cat(tiles, -2);
}

at::Tensor keys_times(const at::Tensor& w, const at::Tensor& x, bool causal, int64_t i0) {
  const at::Tensor wt = w.transpose(-2, -1);
  if (!causal) return at::matmul(wt, x);
  // Keys before i0 are in every row's past; a tile of keys [d0, d0 + t) is in the past of the
  // rows after its own t rows and cut by the diagonal in those rows.
  const int64_t n = w.size(-2);
  const at::Tensor allowed = lower_triangle(std::min(kDiagonalTile, n), w).t();
  std::vector<at::Tensor> tiles;
  if (i0 > 0) tiles.push_back(at::matmul(wt.narrow(-2, 0, i0), x));
  for (int64_t r0 = 0; r0 < n; r0 += kDiagonalTile) {
    const int64_t t = std::min(kDiagonalTile, n - r0), later = n - r0 - t;
    const at::Tensor wk = wt.narrow(-2, i0 + r0, t);
    at::Tensor y = allowed_pairs_matmul(wk.narrow(-1, r0, t), x.narrow(-2, r0, t), allowed.narrow(0, 0, t).narrow(1, 0, t));
    if (later > 0) y.add_(at::matmul(wk.narrow(-1, r0 + t, later), x.narrow(-2, r0 + t, later)));
    tiles.push_back(std::move(y));
  }
  return at::cat(tiles, -2);
}

namespace {

// The logits of queries [i0, i0 + n) against keys [0, L): scale q.k + bias, -inf where the key
// does not take part (masked, or in the future).
at::Tensor chunk_logits(const at::Tensor& q, const at::Tensor& k, const at::Tensor& key_masked,
                        const OptTensor& bias, bool causal, double scale, int64_t i0, int64_t n, int64_t L) {
  at::Tensor s = at::matmul(q.narrow(2, i0, n), k.narrow(2, 0, L).transpose(-2, -1));
  s.mul_(scale);
  if (given(bias)) s.add_(relative_tile(*bias, q.size(2), i0, n, L).unsqueeze(0));
  if (key_masked.defined()) s.masked_fill_(key_masked.narrow(-1, 0, L), -kInf);
  if (causal) s.narrow(-1, i0, n).masked_fill_(lower_triangle(n, s).logical_not(), -kInf);
  return s;
}

at::Tensor key_masked_of(const OptTensor& mask, int64_t B, int64_t Nk) {
  return given(mask) ? mask->logical_not().view({B, 1, 1, Nk}) : at::Tensor();
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> softmax_attention_forward(const at::Tensor& q, const at::Tensor& k,
                                                             const at::Tensor& v, const OptTensor& mask,
                                                             const OptTensor& bias, bool causal, double scale) {
  if (is_half(q)) {  // computed in float32 like the CPU kernel; lse stays float32
    auto [out, lse] = softmax_attention_forward(to_float32(q), to_float32(k), to_float32(v), mask,
                                                to_float32(bias), causal, scale);
    return {as_dtype_of(out, v), lse};
  }
  const int64_t B = q.size(0), H = q.size(1), Nq = q.size(2), Nk = k.size(2), Dv = v.size(3);
  at::Tensor out = at::zeros({B, H, Nq, Dv}, v.options());
  at::Tensor lse = at::full({B, H, Nq}, -kInf, q.options());
  if (out.numel() == 0 || Nk == 0) return {out, lse};
  const at::Tensor key_masked = key_masked_of(mask, B, Nk);
  const int64_t rows = reference_chunk_rows(B * H * Nk);
  for (int64_t i0 = 0; i0 < Nq; i0 += rows) {
    const int64_t n = std::min(rows, Nq - i0), L = causal ? i0 + n : Nk;
    at::Tensor w = chunk_logits(q, k, key_masked, bias, causal, scale, i0, n, L);
    at::Tensor m = std::get<0>(w.max(-1, true));
    m.masked_fill_(m == -kInf, 0);  // a row with no key: exp(-inf - 0) = 0, not NaN
    w.sub_(m).exp_();
    const at::Tensor l = w.sum(-1, true);
    const at::Tensor none = l == 0;
    at::Tensor o = rows_times(w, v.narrow(2, 0, L), causal, i0);
    w.reset();
    out.narrow(2, i0, n).copy_(o.div_(l).masked_fill_(none, 0));
    lse.narrow(2, i0, n).copy_(m.add_(l.log()).masked_fill_(none, -kInf).squeeze(-1));
  }
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> softmax_attention_backward(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const at::Tensor& out, const at::Tensor& lse, const OptTensor& mask, const OptTensor& bias,
    bool causal, double scale) {
  if (is_half(q)) {  // computed in float32, returned in the inputs' dtypes
    auto [gq, gk, gv, gb] = softmax_attention_backward(to_float32(grad_out), to_float32(q), to_float32(k),
                                                       to_float32(v), to_float32(out), lse, mask,
                                                       to_float32(bias), causal, scale);
    return {as_dtype_of(gq, q), as_dtype_of(gk, k), as_dtype_of(gv, v),
            given(bias) ? as_dtype_of(gb, bias) : as_dtype_of(gb, q)};
  }
  const int64_t B = q.size(0), H = q.size(1), Nq = q.size(2), Nk = k.size(2);
  at::Tensor gq = at::zeros_like(q, at::MemoryFormat::Contiguous);
  at::Tensor gk = at::zeros_like(k, at::MemoryFormat::Contiguous);
  at::Tensor gv = at::zeros_like(v, at::MemoryFormat::Contiguous);
  at::Tensor gb = given(bias) ? at::zeros_like(*bias, at::MemoryFormat::Contiguous) : at::empty({0}, q.options());
  if (out.numel() == 0 || Nk == 0) return {gq, gk, gv, gb};
  const at::Tensor key_masked = key_masked_of(mask, B, Nk);
  const int64_t rows = reference_chunk_rows(B * H * Nk);
  for (int64_t i0 = 0; i0 < Nq; i0 += rows) {
    const int64_t n = std::min(rows, Nq - i0), L = causal ? i0 + n : Nk;
    const at::Tensor go = grad_out.narrow(2, i0, n), qc = q.narrow(2, i0, n);
    // A row with no key has lse = -inf: shift it by +inf so that its weights are exp(-inf) = 0.
    at::Tensor shift = lse.narrow(2, i0, n).unsqueeze(-1);
    shift = shift.masked_fill(shift == -kInf, kInf);
    const at::Tensor di = (go * out.narrow(2, i0, n)).sum(-1, true);  // rowsum(dO * O)
    at::Tensor p = chunk_logits(q, k, key_masked, bias, causal, scale, i0, n, L);
    p.sub_(shift).exp_();
    gv.narrow(2, 0, L).add_(keys_times(p, go, causal, i0));
    at::Tensor ds = at::matmul(go, v.narrow(2, 0, L).transpose(-2, -1));  // dP
    ds.sub_(di).mul_(p);
    p.reset();
    // Future pairs have P = 0, but dP there may be inf or NaN (a future value): they take no part.
    if (causal) ds.narrow(-1, i0, n).masked_fill_(lower_triangle(n, ds).logical_not(), 0);
    if (given(bias)) add_relative_tile(gb, B == 1 ? ds.select(0, 0) : ds.sum(0), Nq, i0);
    gq.narrow(2, i0, n).copy_(rows_times(ds, k.narrow(2, 0, L), causal, i0).mul_(scale));
    gk.narrow(2, 0, L).add_(keys_times(ds, qc, causal, i0).mul_(scale));
  }
  return {gq, gk, gv, gb};
}

}  // namespace longattn::ops::reference
