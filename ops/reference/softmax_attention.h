// The reference path of softmax_attention (ops/reference/softmax_attention.cpp): the same
// formula, signatures and saved statistics as the fused CPU kernels of
// `_softmax_attention_forward` / `_softmax_attention_backward`, written with ATen operations so
// that it runs on any device, never holding an N x N tensor.
#pragma once
#include <torch/types.h>

#include <tuple>

#include "ops/common.h"

namespace longattn::ops::reference {

// (out [B, H, Nq, Dv], lse [B, H, Nq]); lse is the natural log of the row's softmax
// denominator including the row max, -inf (and out 0) for a row with no key taking part.
std::tuple<at::Tensor, at::Tensor> softmax_attention_forward(const at::Tensor& q, const at::Tensor& k,
                                                             const at::Tensor& v, const OptTensor& mask,
                                                             const OptTensor& bias, bool causal, double scale);

// (grad_q, grad_k, grad_v, grad_rel_bias); grad_rel_bias is [H, 2N-1], or an empty tensor
// when there is no bias (as the CPU kernel returns it).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> softmax_attention_backward(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const at::Tensor& out, const at::Tensor& lse, const OptTensor& mask, const OptTensor& bias,
    bool causal, double scale);

// Shared by the reference paths whose causal chunks straddle the diagonal (softmax, Shatter).
//
// sum_j a[..., i, j] x[..., j, :] over the pairs with allowed[i, j] only: a forbidden pair
// contributes nothing whatever x[j] holds, while an allowed pair follows IEEE arithmetic (an
// inf or NaN in x reaches the rows that may see it). A plain matmul with a = 0 at forbidden
// pairs would turn an inf or NaN in a later key's row into NaN in an earlier query's output
// (0 * inf = NaN). Computed as a matmul over the finite part of x plus, from three 0/1 matmuls
// against x's NaN / +inf / -inf indicators, which rows reach which non-finite values and with
// which sign; no data-dependent branch (no device sync). a [..., M, K], x [..., K, Dx],
// allowed [M, K] bool (broadcast over the leading dimensions). Extra memory: a few [..., M, K]
// and [..., K, 3 Dx] tensors.
at::Tensor allowed_pairs_matmul(const at::Tensor& a, const at::Tensor& x, const at::Tensor& allowed);

// The [rows, L] tile of a relative-position vector table [R, 2N-1] read at index j - i + N - 1
// for queries i in [i0, i0 + rows) and keys j in [0, L): [R, rows, L] (a copy).
at::Tensor relative_tile(const at::Tensor& table, int64_t N, int64_t i0, int64_t rows, int64_t L);

// The adjoint of relative_tile: adds g [R, rows, L] onto grad [R, 2N-1] at index j - i + N - 1
// (the sums along g's diagonals), deterministically on every device.
void add_relative_tile(const at::Tensor& grad, const at::Tensor& g, int64_t N, int64_t i0);

// The allowed pairs of a causal chunk's diagonal block: key i0 + c' for query i0 + c when c' <= c.
at::Tensor lower_triangle(int64_t n, const at::Tensor& like);

// A query chunk's weights w [..., n, L] (rows i0 + c, keys [0, L)) times per-key rows
// x [..., L, Dx] -> [..., n, Dx]. Causal (L = i0 + n): keys [0, i0) are in every row's past
// (plain matmul); the diagonal block [i0, i0 + n) goes through allowed_pairs_matmul.
at::Tensor rows_times(const at::Tensor& w, const at::Tensor& x, bool causal, int64_t i0);

// The transposed product, per key: w^T x for w [..., n, L] and per-row x [..., n, Dx]
// -> [..., L, Dx]; causal as rows_times.
at::Tensor keys_times(const at::Tensor& w, const at::Tensor& x, bool causal, int64_t i0);

}  // namespace longattn::ops::reference
