// Reference path of Luo et al.'s kernelized attention with a relative bias (issue #17):
//   z_i = sum_j e^{b[j-i] + l_j} a_i.K_j v_j / (sum_j e^{b[j-i] + l_j} a_i.K_j + eps e^{mu_i})
// (kernels/kernelized_rpe/kernelized_rpe.h) with ATen operations only, on any device.
//
// Method: query chunks computed directly, which is exact for any finite bias without the fused
// kernel's detrending, a posteriori checks and fallback: row i's weights are
// W_ij = e^{b[j-i] + l_j - M_i} a_i.K_j with its own shift M_i = max_j (b[j-i] + l_j) over its keys,
// so every factor is <= 1, the largest is 1, and the sums of nonnegative terms are accurate to the
// dtype's rounding whatever the bias spread (the fused kernel's direct rows, for every row). The
// chunk's [rows, N] bias block is a window of b (unfold), never a full N x N tensor. Causal
// chunks read only the keys up to their last row: the keys before the chunk by matmul, the
// chunk's own diagonal block by triangular_matmul (masked), so no future key or value, NaN or
// inf, reaches an earlier row. The backward recomputes each chunk's weights and forms the
// gradients the same way; grad b sums each chunk's [rows, N] gradient along its diagonals.
// Cost: O(N^2 (m + Dv)) time per (b, h) (the fused kernel: O(N log N m Dv) by FFT), O(N) memory
// per row of a chunk.
//
// Peak memory (elements beyond the inputs; BH = B * H, E = kReferenceChunkElements = 2^24,
// rows per chunk r = max(1, E / (8 BH N)), so T = BH r N <= E / 8 (or BH N when one row is larger)
// is one chunk's [B, H, r, N] tensor; P <= E the masked diagonal product of triangular_matmul):
//   forward   BH N (Dv + 1) [out, den] + BH N / 8 [direct, bytes] + BH N (m + Dv + 2) [masked
//             copies of phi_k, v and the log-scales] + 10 T + 2 BH r (m + Dv) + P
//   backward  BH N (2 m + Dv + 2) + H (2N - 1) [the gradients] + BH N (m + Dv + 2) + 16 T
//             + 4 BH r (m + Dv) + P
// (T counts: the bias window, its exponents and mask, the weights and their product with the
// features; in the backward also dL/dW, its two products, the diagonal sums' flipped and padded
// copies), so at most about 3 E elements of chunk temporaries whatever N is.
// bfloat16/float16 inputs are computed in float32 copies (as the kernel); float32 inputs stay
// float32 (the kernel computes them in double, which not every device has): per row the direct
// sums keep float32's relative accuracy, ~N * 6e-8.
#include "ops/reference/kernelized_rpe.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <limits>
#include <string>

#include "ops/common.h"
#include "ops/reference/kernelized_attention.h"

namespace longattn::ops::reference {
namespace {

constexpr const char* kOp = "kernelized_rpe_attention";
constexpr double kNegInf = -std::numeric_limits<double>::infinity();

at::Tensor zero_where_not(const at::Tensor& keep, const at::Tensor& t) {
  return at::where(keep, t, at::zeros({}, t.options()));
}

// A tensor whose values can be read (not a Meta or fake tensor being traced).
bool has_values(const at::Tensor& t) {
  return !t.is_meta() && !t.key_set().has(c10::DispatchKey::Python) &&
         !t.key_set().has(c10::DispatchKey::Functionalize);
}

// The problem shared by the forward and the backward.
struct Rpe {
  int64_t B, H, N, m, Dv, block;
  bool causal;
  double eps;
  at::Tensor windows;  // [H, N, N] view of b: windows[h, s, j] = b[h, s + j]
  at::Tensor ell_on;   // [B, H, N]: l_j for the keys that take part, -inf for the others
  at::Tensor mu;       // [B, H, N] or undefined (0)
  at::Tensor fkm, vm;  // phi_k and v with masked rows zeroed (never read)
  at::Tensor keep;     // [B, 1, N] mask or undefined
  at::Tensor has_key;  // [B, 1, N]: row i has a key that takes part (causal: j <= i)
};

Rpe make_problem(const at::Tensor& fq, const at::Tensor& fk, const at::Tensor& v, const at::Tensor& b,
                 const OptTensor& kls, const OptTensor& els, const OptTensor& mask, bool causal,
                 double eps) {
  Rpe r;
  r.B = concrete(fq, 0), r.H = concrete(fq, 1), r.N = concrete(fq, 2), r.m = concrete(fq, 3);
  r.Dv = concrete(v, 3);
  r.causal = causal;
  r.eps = eps;
  r.block = triangular_block(r.B * r.H, std::max<int64_t>({r.m, r.Dv, 1}), r.N);
  r.windows = b.unfold(1, r.N, 1);
  at::Tensor ell = kls && kls->defined() ? *kls : at::zeros({r.B, r.H, r.N}, fq.options());
  r.mu = els && els->defined() ? *els : at::Tensor();
  r.fkm = fk;
  r.vm = v;
  at::Tensor count;
  if (mask && mask->defined()) {
    r.keep = mask->unsqueeze(1);
    ell = at::where(r.keep, ell, at::full({}, kNegInf, ell.options()));
    r.fkm = zero_where_not(r.keep.unsqueeze(-1), fk);
    r.vm = zero_where_not(r.keep.unsqueeze(-1), v);
    count = r.keep.to(at::kLong).cumsum(-1);
  } else {
    count = at::arange(1, r.N + 1, fq.options().dtype(at::kLong)).view({1, 1, r.N});
  }
  r.ell_on = ell;
  r.has_key = causal ? count > 0 : (count.narrow(-1, r.N - 1, 1) > 0).expand_as(count);
  return r;
}

// One chunk of rows [i0, i0 + n) and its keys [0, kend).
struct Rows {
  int64_t i0, n, kend;
  at::Tensor fq;        // [B, H, n, m]
  at::Tensor on;        // [B, H, n, kend]: the pair takes part (key unmasked, causal, b > -inf)
  at::Tensor om;        // e^{b[j-i] + l_j - M_i}, 0 off `on`
  at::Tensor W;         // om * a_i.K_j, 0 off `on`
  at::Tensor eps_row;   // eps e^{mu_i - M_i} (0 for a row with no weight) [B, H, n]
};

Rows rows_of(const Rpe& r, const at::Tensor& fq, int64_t i0, int64_t n) {
  Rows w;
  w.i0 = i0, w.n = n, w.kend = r.causal ? i0 + n : r.N;
  w.fq = fq.narrow(2, i0, n);
  // b[j - i + N - 1] for i in the chunk: windows N-1-i, i.e. a reversed run of n windows.
  const at::Tensor bias = r.windows.narrow(1, r.N - i0 - n, n).flip({1}).narrow(-1, 0, w.kend);
  at::Tensor E = bias.unsqueeze(0) + r.ell_on.narrow(-1, 0, w.kend).unsqueeze(-2);
  if (r.causal) {
    const at::Tensor past = at::ones({n, w.kend}, r.ell_on.options().dtype(at::kBool)).tril(i0);
    E = at::where(past, E, at::full({}, kNegInf, E.options()));
  }
  w.on = E != kNegInf;
  const at::Tensor M = E.amax(-1);
  const at::Tensor Mfin = M != kNegInf;
  const at::Tensor Ms = zero_where_not(Mfin, M);
  w.om = at::exp(E - Ms.unsqueeze(-1));  // E = -inf gives 0
  E = at::Tensor();
  w.W = zero_where_not(w.on, w.om * at::matmul(w.fq, r.fkm.narrow(2, 0, w.kend).transpose(-1, -2)));
  if (r.eps > 0) {
    const at::Tensor mu = r.mu.defined() ? r.mu.narrow(2, i0, n) : at::zeros({}, M.options());
    w.eps_row = zero_where_not(Mfin, r.eps * at::exp(mu - Ms));
  } else {
    w.eps_row = at::zeros_like(M);
  }
  return w;
}

// sum_j X[..., i, j] Y[..., j, :] over the chunk's keys; causal: the keys before the chunk by
// matmul, the chunk's own by the masked triangular product.
at::Tensor rows_times(const Rpe& r, const Rows& w, const at::Tensor& X, const at::Tensor& Y) {
  if (!r.causal) return at::matmul(X, Y.narrow(2, 0, w.kend));
  at::Tensor res = triangular_matmul(X.narrow(-1, w.i0, w.n), Y.narrow(2, w.i0, w.n), false, r.block);
  if (w.i0 > 0) res = res + at::matmul(X.narrow(-1, 0, w.i0), Y.narrow(2, 0, w.i0));
  return res;
}

// acc[..., j, :] += sum_i X[..., i, j] Y[..., i, :] for the chunk's keys j < kend (causal: i >= j).
void add_keys_times(const Rpe& r, const Rows& w, const at::Tensor& X, const at::Tensor& Y, at::Tensor& acc) {
  if (!r.causal) {
    acc.add_(at::matmul(X.transpose(-1, -2), Y));
    return;
  }
  if (w.i0 > 0) acc.narrow(2, 0, w.i0).add_(at::matmul(X.narrow(-1, 0, w.i0).transpose(-1, -2), Y));
  acc.narrow(2, w.i0, w.n).add_(triangular_matmul(X.narrow(-1, w.i0, w.n).transpose(-1, -2), Y, true, r.block));
}

at::Tensor reciprocal_or_zero(const at::Tensor& D) {
  return at::where(D.isfinite().logical_and(D > 0), D.reciprocal(), at::zeros({}, D.options()));
}

void check_bias(const at::Tensor& b) {
  // As the CPU kernel: -inf is an offset that takes no part, NaN and +inf have no meaning.
  if (!has_values(b) || b.numel() == 0) return;
  const at::Tensor bad = b.isnan().logical_or(b == INFINITY);
  if (bad.any().item<bool>())
    fail(kOp, "rel_bias must be finite or -inf (an offset that takes no part), got " +
                  std::to_string(bad.sum().item<int64_t>()) + " NaN or +inf values");
}

// Rows per chunk: an eighth of the budget per [B, H, rows, N] tensor, since the backward holds
// up to 16 of them at once (see the peak-memory formula at the top).
int64_t chunk_rows(const Rpe& r) { return reference_chunk_rows(8 * r.B * r.H * r.N); }

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> kernelized_rpe_forward(
    const at::Tensor& fq, const at::Tensor& fk, const at::Tensor& v, const at::Tensor& b,
    const OptTensor& kls, const OptTensor& els, const OptTensor& mask, bool causal, double eps) {
  if (is_half(fq)) {  // computed in float32 (ops/common.h); den stays float32
    auto [out, den, direct] = kernelized_rpe_forward(to_float32(fq), to_float32(fk), to_float32(v), to_float32(b),
                                                     to_float32(kls), to_float32(els), mask, causal, eps);
    return {as_dtype_of(out, v), den, direct};
  }
  check_bias(b);
  const int64_t B = concrete(fq, 0), H = concrete(fq, 1), N = concrete(fq, 2), Dv = concrete(v, 3);
  at::Tensor out = at::zeros({B, H, N, Dv}, v.options());
  at::Tensor den = at::zeros({B, H, N}, v.options());
  at::Tensor direct = at::zeros({B, H, N}, v.options().dtype(at::kByte));
  if (B * H * N == 0) return {out, den, direct};
  const Rpe r = make_problem(fq, fk, v, b, kls, els, mask, causal, eps);
  const int64_t rows = chunk_rows(r);
  for (int64_t i0 = 0; i0 < N; i0 += rows) {
    const int64_t n = std::min(rows, N - i0);
    const Rows w = rows_of(r, fq, i0, n);
    const at::Tensor num = rows_times(r, w, w.W, r.vm);
    const at::Tensor D = w.W.sum(-1) + w.eps_row;
    const at::Tensor live = r.has_key.narrow(-1, i0, n);
    out.narrow(2, i0, n).copy_(num * reciprocal_or_zero(D).unsqueeze(-1));
    den.narrow(2, i0, n).copy_(zero_where_not(live, D));
    direct.narrow(2, i0, n).copy_(live.expand({B, H, n}));
  }
  return {out, den, direct};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> kernelized_rpe_backward(
    const at::Tensor& grad_out, const at::Tensor& fq, const at::Tensor& fk, const at::Tensor& v,
    const at::Tensor& b, const OptTensor& kls, const OptTensor& els, const at::Tensor& out,
    const at::Tensor& den, const at::Tensor& /*direct*/, const OptTensor& mask, bool causal, double eps) {
  if (is_half(fq)) {  // computed in float32 (ops/common.h), returned in the inputs' dtypes
    auto [gq, gk, gv, gb, gl, gm] = kernelized_rpe_backward(
        to_float32(grad_out), to_float32(fq), to_float32(fk), to_float32(v), to_float32(b), to_float32(kls),
        to_float32(els), to_float32(out), den.to(at::kFloat), at::Tensor(), mask, causal, eps);
    // The log-scales' gradients stay float32 (stat_dtype), as the log-scales themselves.
    return {as_dtype_of(gq, fq), as_dtype_of(gk, fk), as_dtype_of(gv, v), as_dtype_of(gb, b), gl, gm};
  }
  const int64_t B = concrete(fq, 0), H = concrete(fq, 1), N = concrete(fq, 2);
  at::Tensor gq = at::zeros(concrete_sizes(fq), fq.options());
  at::Tensor gk = at::zeros(concrete_sizes(fk), fk.options());
  at::Tensor gv = at::zeros(concrete_sizes(v), v.options());
  at::Tensor gb = at::zeros(concrete_sizes(b), b.options());
  at::Tensor gl = at::zeros({B, H, N}, fq.options());
  at::Tensor gm = at::zeros({B, H, N}, fq.options());
  if (B * H * N == 0) return {gq, gk, gv, gb, gl, gm};
  const Rpe r = make_problem(fq, fk, v, b, kls, els, mask, causal, eps);
  const at::Tensor go = grad_out.to(fq.scalar_type());
  const int64_t rows = chunk_rows(r);
  for (int64_t i0 = 0; i0 < N; i0 += rows) {
    const int64_t n = std::min(rows, N - i0);
    const Rows w = rows_of(r, fq, i0, n);
    const at::Tensor inv = reciprocal_or_zero(den.narrow(2, i0, n));
    const at::Tensor gz = go.narrow(2, i0, n);
    // With D_i = sum_j W_ij + eps_i:  dL/dW_ij = (gz_i . v_j) / D_i - (gz_i . z_i) / D_i.
    const at::Tensor gD = -(gz * out.narrow(2, i0, n)).sum(-1) * inv;
    const at::Tensor gnum = gz * inv.unsqueeze(-1);
    const at::Tensor gW = at::matmul(gnum, r.vm.narrow(2, 0, w.kend).transpose(-1, -2)) + gD.unsqueeze(-1);
    const at::Tensor gp = zero_where_not(w.on, gW * w.om);     // dL/d(a_i.K_j)
    const at::Tensor glog = zero_where_not(w.on, gW * w.W);    // dL/d(b[j-i] + l_j)
    gq.narrow(2, i0, n).copy_(rows_times(r, w, gp, r.fkm));
    at::Tensor gk_keys = gk.narrow(2, 0, w.kend), gv_keys = gv.narrow(2, 0, w.kend);
    add_keys_times(r, w, gp, w.fq, gk_keys);
    add_keys_times(r, w, w.W, gnum, gv_keys);
    gl.narrow(2, 0, w.kend).add_(glog.sum(-2));
    gm.narrow(2, i0, n).copy_(gD * w.eps_row);
    // grad b[j - i + N - 1]: the diagonals of the chunk's [n, kend] block (summed over the batch).
    // Rows reversed and padded by n, then read with a row length one shorter: row i' moves i'
    // places right, so column t holds offset t - (n - 1) - i0 of every row.
    const int64_t L = w.kend + n;
    const at::Tensor padded = at::constant_pad_nd(glog.sum(0).flip({1}), {0, n});
    const at::Tensor skewed = padded.reshape({H, n * L}).narrow(1, 0, n * (L - 1)).view({H, n, L - 1});
    gb.narrow(1, N - n - i0, L - 1).add_(skewed.sum(1));
  }
  if (r.keep.defined()) {  // masked keys: zero gradients whatever they hold
    gk = zero_where_not(r.keep.unsqueeze(-1), gk);
    gv = zero_where_not(r.keep.unsqueeze(-1), gv);
    gl = zero_where_not(r.keep, gl);
  }
  return {gq, gk, gv, gb, gl, gm};
}

}  // namespace longattn::ops::reference
