// Fuzz cases of the exact attentions: softmax_attention and shatter_attention.
#include "fuzz/kernel_fuzz_common.h"

namespace kernel_fuzz {

// ---------------------------------------------------------------------------------------------
// Softmax attention: forward against a naive double reference, backward for finiteness.

// The reference: softmax(scale q.k + bias) over the keys that take part, in double.
// Tolerance (per query row i, a worst-case bound, so that a pass says something):
//  * each logit computed in T carries an error of at most delta_i = (D + 4) eps_T (|scale|
//    sum_d |q_d k_d| + |bias|) (a dot product of D terms in any order, plus the roundings of the
//    scale, the bias addition and the change to base 2 of the exponential);
//  * logits off by at most delta move each probability by a factor within e^{+-2 delta}, hence the
//    output by at most ~2 delta max|v| (+ 2 delta more for the normaliser);
//  * the exponentials (a few ulps), the sums of Nk terms in T and the online rescaling add at
//    most (Nk + 16) eps_T relative to max|v|.
// So |out - ref| <= (4 delta_i + (Nk + 16) eps_T) max_j |v_j| and |lse - ref| <= 2 delta_i +
// (Nk + 16) eps_T (1 + |lse|). A wrong mask, offset or causal boundary moves rows by O(max|v|).
template <class T>
void softmax_reference_check(const SoftmaxAttentionParams<T>& p, const BHND<T>& out, const T* lse,
                             const Mask& mask) {
  const int64_t B = p.q.B, H = p.q.H, Nq = p.q.N, Nk = p.k.N, D = p.q.D, Dv = p.v.D;
  std::vector<double> logit(static_cast<size_t>(Nk)), acc(static_cast<size_t>(Dv));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < Nq; ++i) {
        double mx = -INFINITY, delta = 0, vmax = 0;
        for (int64_t j = 0; j < Nk; ++j) {
          if (!mask.allowed(b, j) || (p.causal && j > i)) {
            logit[size_t(j)] = -INFINITY;
            continue;
          }
          double x = 0, ax = 0;
          for (int64_t d = 0; d < D; ++d) {
            x += at(p.q, b, h, i, d) * at(p.k, b, h, j, d);
            ax += std::abs(at(p.q, b, h, i, d) * at(p.k, b, h, j, d));
          }
          x *= p.scale;
          double bias = p.rel_bias ? double(p.rel_bias[h * p.rel_bias_stride_h + (j - i + Nq - 1)]) : 0.0;
          logit[size_t(j)] = x + bias;
          mx = std::max(mx, x + bias);
          delta = std::max(delta, double(D + 4) * kEps<T> * (std::abs(p.scale) * ax + std::abs(bias)));
          for (int64_t d = 0; d < Dv; ++d) vmax = std::max(vmax, std::abs(at(p.v, b, h, j, d)));
        }
        const double got_lse = double(lse[(b * H + h) * Nq + i]);
        if (mx == -INFINITY) {  // no key: out = 0, lse = -inf
          if (got_lse != -INFINITY) fail("softmax lse[%lld,%lld,%lld] = %g, want -inf (no key)", (long long)b, (long long)h, (long long)i, got_lse);
          for (int64_t d = 0; d < Dv; ++d)
            if (at(out, b, h, i, d) != 0.0) fail("softmax out[%lld,%lld,%lld,%lld] = %g, want 0 (no key)", (long long)b, (long long)h, (long long)i, (long long)d, at(out, b, h, i, d));
          continue;
        }
        double z = 0;
        std::fill(acc.begin(), acc.end(), 0.0);
        for (int64_t j = 0; j < Nk; ++j) {
          if (logit[size_t(j)] == -INFINITY) continue;
          const double w = std::exp(logit[size_t(j)] - mx);
          z += w;
          for (int64_t d = 0; d < Dv; ++d) acc[size_t(d)] += w * at(p.v, b, h, j, d);
        }
        const double sum_eps = double(Nk + 16) * kEps<T>;
        const double ref_lse = mx + std::log(z);
        const double tol_lse = 2 * delta + sum_eps * (1 + std::abs(ref_lse)) + double(D + 4) * kTiny<T>;
        if (!(std::abs(got_lse - ref_lse) <= tol_lse))
          fail("softmax lse[%lld,%lld,%lld] = %.9g, reference %.9g, tolerance %.3g", (long long)b, (long long)h,
               (long long)i, got_lse, ref_lse, tol_lse);
        const double tol = (4 * delta + sum_eps) * vmax + double(4 * Nk + 16) * kTiny<T>;
        for (int64_t d = 0; d < Dv; ++d) {
          const double ref = acc[size_t(d)] / z, got = at(out, b, h, i, d);
          if (!(std::abs(got - ref) <= tol))
            fail("softmax out[%lld,%lld,%lld,%lld] = %.9g, reference %.9g, tolerance %.3g", (long long)b,
                 (long long)h, (long long)i, (long long)d, got, ref, tol);
        }
      }
}

template <class T>
void softmax_case(Bytes& in, uint64_t seed, Stats& st) {
  int64_t B = size_in(in, 1, 3), H = size_in(in, 1, 3), Nq = size_in(in, 1, 300), Nk = size_in(in, 1, 300);
  int64_t D = size_in(in, 1, 80), Dv = size_in(in, 1, 80);
  const bool causal = in.u8() & 1, has_bias = in.u8() & 1;
  if (causal || has_bias) Nk = Nq;
  fit_budget({&B, &H, &Nq, &D}, 3e4);
  fit_budget({&B, &H, &Nq, &Dv}, 3e4);
  if (causal || has_bias) Nk = Nq;  // fit_budget may have shrunk Nq
  fit_budget({&B, &H, &Nk, &D}, 3e4);
  if (causal || has_bias) Nq = Nk;
  static const double kScales[] = {-1, 1, 0, 0.01, 30, -2};  // -1: 1/sqrt(D)
  double scale = in.pick(kScales);
  if (scale == -1) scale = 1 / std::sqrt(double(D));
  describe("softmax<%s> B=%lld H=%lld Nq=%lld Nk=%lld D=%lld Dv=%lld causal=%d scale=%g", type_name(T()),
           (long long)B, (long long)H, (long long)Nq, (long long)Nk, (long long)D, (long long)Dv, causal, scale);
  SoftmaxAttentionParams<T> p;
  auto q = input_tensor<T>("q", in, seed + 1, B, H, Nq, D, &p.q);
  auto k = input_tensor<T>("k", in, seed + 2, B, H, Nk, D, &p.k);
  auto v = input_tensor<T>("v", in, seed + 3, B, H, Nk, Dv, &p.v);
  Mask mask = make_mask(in, B, Nk, seed + 4);
  p.key_padding_mask = mask.present ? mask.buf.ptr() : nullptr;
  p.mask_stride_b = mask.stride;
  Buf<T> bias;
  if (has_bias) {
    const int64_t R = 2 * Nq - 1, stride = R + in.below(3);
    bias = rows_buffer<T>("rel_bias", H, R, stride);
    const ValueSpec spec = value_spec(in, seed + 5);
    fill_values(bias, spec);
    describe("bias:%s%s", kRegimeNames[spec.regime], spec.special_log2 >= 0 ? "+nonfinite" : "");
    snapshot(bias);
    p.rel_bias = bias.ptr();
    p.rel_bias_stride_h = stride;
  }
  p.causal = causal;
  p.scale = scale;
  p.threads = pick_threads(in);
  BHND<T> outv;
  auto out = output_tensor<T>("out", in, B, H, Nq, Dv, &outv);
  auto lse = flat<T>("lse", B * H * Nq, output_pad<T>());
  softmax_attention_forward(p, outv, lse.ptr());
  for (auto* b : {&q, &k, &v}) check_unchanged(*b);
  if (mask.present) check_unchanged(mask.buf);
  if (has_bias) check_unchanged(bias);
  check_output(out);
  check_output(lse);
  // Non-finite inputs: only memory safety and the layout invariants above (a NaN anywhere may
  // legitimately reach any row, and for causal a future non-finite key is a known issue).
  const bool finite = moderate(q) && moderate(k) && moderate(v) && (!has_bias || moderate(bias)) &&
                      std::abs(scale) <= 30;
  if (finite) {
    ++st.finite_checked[kSoftmax];
    check_finite(out);
    check_finite(lse, true);
    softmax_reference_check(p, outv, lse.ptr(), mask);
    ++st.reference_checked[kSoftmax];
  }
  if (!(in.u8() & 1)) return;
  ++st.backward[kSoftmax];
  SoftmaxAttentionGrads<T> g;
  g.out = as_const(outv);
  auto gout = input_tensor<T>("grad_out", in, seed + 6, B, H, Nq, Dv, &g.grad_out, /*allow_nonfinite=*/finite);
  g.lse = lse.ptr();
  auto gq = flat<T>("grad_q", B * H * Nq * D, output_pad<T>());
  auto gk = flat<T>("grad_k", B * H * Nk * D, output_pad<T>());
  auto gv = flat<T>("grad_v", B * H * Nk * Dv, output_pad<T>());
  auto gb = flat<T>("grad_rel_bias", has_bias ? H * (2 * Nq - 1) : 0, output_pad<T>());
  g.grad_q = BHND<T>::contiguous(gq.ptr(), B, H, Nq, D);
  g.grad_k = BHND<T>::contiguous(gk.ptr(), B, H, Nk, D);
  g.grad_v = BHND<T>::contiguous(gv.ptr(), B, H, Nk, Dv);
  g.grad_rel_bias = has_bias ? gb.ptr() : nullptr;
  snapshot(out);
  snapshot(lse);
  softmax_attention_backward(p, g);
  for (auto* b : {&q, &k, &v, &gout, &out, &lse}) check_unchanged(*b);
  for (auto* b : {&gq, &gk, &gv, &gb}) check_output(*b);
  if (finite && moderate(gout))
    for (auto* b : {&gq, &gk, &gv, &gb}) check_finite(*b);
}


// ---------------------------------------------------------------------------------------------
// Shatter.
template <class T>
void shatter_case(Bytes& in, uint64_t seed, Stats& st) {
  int64_t B = size_in(in, 1, 3), N = size_in(in, 1, 300), D = size_in(in, 1, 80), Dv = size_in(in, 1, 80);
  int64_t P = size_in(in, 1, 5);
  fit_budget({&B, &N, &N, &D}, 3e5);
  fit_budget({&B, &N, &N, &P, &Dv}, 3e5);
  ShatterParams<T> p;
  p.activation = (in.u8() & 1) ? ShatterActivation::sigmoid : ShatterActivation::softmax;
  p.causal = in.u8() & 1;
  static const double kScales[] = {-1, 1, 0, 0.01, 30, -2};
  p.scale = in.pick(kScales);
  if (p.scale == -1) p.scale = 1 / std::sqrt(double(D));
  p.threads = pick_threads(in);
  const bool softmax = p.activation == ShatterActivation::softmax;
  describe("shatter<%s> B=%lld N=%lld D=%lld Dv=%lld P=%lld act=%s causal=%d scale=%g", type_name(T()), (long long)B,
           (long long)N, (long long)D, (long long)Dv, (long long)P, softmax ? "softmax" : "sigmoid", p.causal, p.scale);
  auto q = input_tensor<T>("q", in, seed + 1, B, 1, N, D, &p.q);
  auto k = input_tensor<T>("k", in, seed + 2, B, 1, N, D, &p.k);
  auto v = input_tensor<T>("v", in, seed + 3, B, P, N, Dv, &p.v);
  const int64_t R = 2 * N - 1, stride = R + in.below(3);
  auto part = rows_buffer<T>("partition", P, R, stride);
  const ValueSpec sp = value_spec(in, seed + 4);
  fill_values(part, sp);
  describe("partition:%s%s", kRegimeNames[sp.regime], sp.special_log2 >= 0 ? "+nonfinite" : "");
  snapshot(part);
  p.partition = part.ptr();
  p.partition_stride_p = stride;
  Mask mask = make_mask(in, B, N, seed + 5);
  p.key_padding_mask = mask.present ? mask.buf.ptr() : nullptr;
  p.mask_stride_b = mask.stride;
  BHND<T> outv;
  auto out = output_tensor<T>("out", in, B, 1, N, Dv, &outv);
  const bool want_lse = softmax || (in.u8() & 1);
  auto lse = flat<T>("lse", want_lse ? B * N : 0, output_pad<T>());
  shatter_forward(p, outv, want_lse ? lse.ptr() : nullptr);
  for (auto* b : {&q, &k, &v, &part}) check_unchanged(*b);
  if (mask.present) check_unchanged(mask.buf);
  check_output(out);
  check_output(lse);
  // Causal with non-finite inputs: a known issue (a future non-finite key may reach earlier
  // rows) being fixed separately; only finite, moderate inputs are checked for finiteness.
  const bool finite = moderate(q) && moderate(k) && moderate(v) && moderate(part) && std::abs(p.scale) <= 30;
  if (finite) {
    ++st.finite_checked[kShatter];
    check_finite(out);
    check_finite(lse, softmax);
  }
  if (!(in.u8() & 1)) return;
  ++st.backward[kShatter];
  ShatterGrads<T> g;
  g.out = as_const(outv);
  g.lse = want_lse ? lse.ptr() : nullptr;
  auto gout = input_tensor<T>("grad_out", in, seed + 6, B, 1, N, Dv, &g.grad_out, finite);
  auto gq = output_tensor<T>("grad_q", in, B, 1, N, D, &g.grad_q);
  auto gk = output_tensor<T>("grad_k", in, B, 1, N, D, &g.grad_k);
  auto gv = output_tensor<T>("grad_v", in, B, P, N, Dv, &g.grad_v);
  auto gp = flat<T>("grad_partition", P * R, output_pad<T>());
  g.grad_partition = gp.ptr();
  snapshot(out);
  snapshot(lse);
  shatter_backward(p, g);
  for (auto* b : {&q, &k, &v, &part, &gout, &out, &lse}) check_unchanged(*b);
  for (auto* b : {&gq, &gk, &gv, &gp}) check_output(*b);
  if (finite && moderate(gout))
    for (auto* b : {&gq, &gk, &gv, &gp}) check_finite(*b);
}


template void softmax_case<float>(Bytes&, uint64_t, Stats&);
template void softmax_case<double>(Bytes&, uint64_t, Stats&);
template void shatter_case<float>(Bytes&, uint64_t, Stats&);
template void shatter_case<double>(Bytes&, uint64_t, Stats&);

}  // namespace kernel_fuzz
