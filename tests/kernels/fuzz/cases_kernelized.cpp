// Fuzz cases of kernelized attention, its feature maps and Luo et al.'s RPE.
#include "fuzz/kernel_fuzz_common.h"

namespace kernel_fuzz {

// ---------------------------------------------------------------------------------------------
// Kernelized attention and its feature maps.
const FeatureMap kMaps[] = {FeatureMap::elu, FeatureMap::relu, FeatureMap::sikf, FeatureMap::favor};

template <class T>
void kernelized_case(Bytes& in, uint64_t seed, Stats& st) {
  int64_t B = size_in(in, 1, 3), H = size_in(in, 1, 3), Nq = size_in(in, 1, 300), Nk = size_in(in, 1, 300);
  int64_t D = size_in(in, 1, 80), Dv = size_in(in, 1, 80);
  const FeatureMap fm = in.pick(kMaps);
  int64_t m = fm == FeatureMap::favor ? size_in(in, 1, 80) : D;
  const bool causal = in.u8() & 1;
  if (causal) Nk = Nq;
  fit_budget({&B, &H, &Nq, &m, &Dv}, 2e5);
  fit_budget({&B, &H, &Nk, &m, &Dv}, 2e5);
  fit_budget({&B, &H, &Nq, &D}, 3e4);
  fit_budget({&B, &H, &Nk, &D}, 3e4);
  if (causal) Nq = Nk = std::min(Nq, Nk);
  if (fm != FeatureMap::favor) m = D;
  static const double kEpsChoices[] = {1e-6, 0.0, 1e-3, 1.0};
  static const int64_t kChunks[] = {0, 1, 2, 3, 7, 16, 64};
  KernelizedAttentionParams<T> p;
  p.feature_map = fm;
  p.causal = causal;
  p.eps = in.pick(kEpsChoices);
  p.chunk = in.pick(kChunks);
  p.threads = pick_threads(in);
  describe("kernelized<%s> B=%lld H=%lld Nq=%lld Nk=%lld D=%lld Dv=%lld map=%s m=%lld causal=%d eps=%g chunk=%lld",
           type_name(T()), (long long)B, (long long)H, (long long)Nq, (long long)Nk, (long long)D, (long long)Dv,
           feature_map_name(fm), (long long)m, causal, p.eps, (long long)p.chunk);
  auto q = input_tensor<T>("q", in, seed + 1, B, H, Nq, D, &p.q);
  auto k = input_tensor<T>("k", in, seed + 2, B, H, Nk, D, &p.k);
  auto v = input_tensor<T>("v", in, seed + 3, B, H, Nk, Dv, &p.v);
  Mask mask = make_mask(in, B, Nk, seed + 4);
  p.key_padding_mask = mask.present ? mask.buf.ptr() : nullptr;
  p.mask_stride_b = mask.stride;
  Buf<T> proj;
  if (fm == FeatureMap::favor) {
    const bool per_head = in.u8() & 1;
    proj = flat<T>("projection", (per_head ? H : 1) * m * D, T(0));
    fill_values(proj, ValueSpec{0, -1, seed + 5});
    snapshot(proj);
    p.projection = proj.ptr();
    p.num_features = m;
    p.projection_stride_h = per_head ? m * D : 0;
    describe("projection=%s", per_head ? "per-head" : "shared");
  }
  BHND<T> outv;
  auto out = output_tensor<T>("out", in, B, H, Nq, Dv, &outv);
  const bool want_inv = in.u8() & 1;
  auto inv = flat<T>("inv_denom", want_inv ? B * H * Nq : 0, output_pad<T>());
  kernelized_attention_forward(p, outv, want_inv ? inv.ptr() : nullptr);
  for (auto* b : {&q, &k, &v, &proj}) check_unchanged(*b);
  if (mask.present) check_unchanged(mask.buf);
  check_output(out);
  check_output(inv);
  const bool finite = moderate(q) && moderate(k) && moderate(v);
  if (finite) {
    ++st.finite_checked[kKernelized];
    check_finite(out);
    check_finite(inv);
  }
  if (!(in.u8() & 1)) return;
  ++st.backward[kKernelized];
  KernelizedAttentionGrads<T> g;
  g.out = as_const(outv);
  auto gout = input_tensor<T>("grad_out", in, seed + 6, B, H, Nq, Dv, &g.grad_out, finite);
  g.inv_denom = want_inv && (in.u8() & 1) ? inv.ptr() : nullptr;
  auto gq = output_tensor<T>("grad_q", in, B, H, Nq, D, &g.grad_q);
  auto gk = output_tensor<T>("grad_k", in, B, H, Nk, D, &g.grad_k);
  auto gv = output_tensor<T>("grad_v", in, B, H, Nk, Dv, &g.grad_v);
  snapshot(out);
  snapshot(inv);
  kernelized_attention_backward(p, g);
  for (auto* b : {&q, &k, &v, &proj, &gout, &out, &inv}) check_unchanged(*b);
  for (auto* b : {&gq, &gk, &gv}) check_output(*b);
  if (finite && moderate(gout)) {
    // With eps = 0 the gradient of q is ~|v| / denominator, unbounded as the denominator goes to
    // 0 (tiny relu features): it may exceed T's range, so it is not required finite then.
    if (p.eps > 0) check_finite(gq);
    check_finite(gk);
    check_finite(gv);
  }
}

template <class T>
void feature_map_case(Bytes& in, uint64_t seed, Stats& st) {
  int64_t rows = size_in(in, 1, 300), D = size_in(in, 1, 80);
  FeatureMapSpec<T> s;
  s.kind = in.pick(kMaps);
  s.D = D;
  s.m = s.kind == FeatureMap::favor ? size_in(in, 1, 80) : D;
  fit_budget({&rows, &s.m, &D}, 1e5);
  s.D = D;
  if (s.kind != FeatureMap::favor) s.m = D;
  const int64_t ldx = D + in.below(3), ldphi = s.m + in.below(3), ldgx = D + in.below(3);
  describe("feature_map<%s> rows=%lld D=%lld m=%lld map=%s ldx=%lld ldphi=%lld", type_name(T()), (long long)rows,
           (long long)D, (long long)s.m, feature_map_name(s.kind), (long long)ldx, (long long)ldphi);
  auto x = rows_buffer<T>("x", rows, D, ldx);
  const ValueSpec spec = value_spec(in, seed + 1);
  fill_values(x, spec);
  describe("x:%s%s", kRegimeNames[spec.regime], spec.special_log2 >= 0 ? "+nonfinite" : "");
  snapshot(x);
  Buf<T> omega;
  if (s.kind == FeatureMap::favor) {
    omega = flat<T>("omega", s.m * D, T(0));
    fill_values(omega, ValueSpec{0, -1, seed + 2});
    snapshot(omega);
    s.omega = omega.ptr();
  }
  auto phi = rows_buffer<T>("phi", rows, s.m, ldphi);
  std::fill_n(phi.ptr(), phi.len, output_pad<T>());
  const bool exponential = feature_map_is_exponential(s.kind);
  auto shift = flat<T>("shift", exponential ? rows : 0, output_pad<T>());
  auto argmax = flat<int32_t>("argmax", exponential ? rows : 0, output_pad<int32_t>());
  feature_map_forward(s, x.ptr(), ldx, rows, phi.ptr(), ldphi, exponential ? shift.ptr() : nullptr,
                      exponential ? argmax.ptr() : nullptr);
  check_unchanged(x);
  check_unchanged(omega);
  check_output(phi);
  check_output(shift);
  check_output(argmax);
  for (int64_t r = 0; r < argmax.len; ++r)
    if (argmax.data[size_t(r)] < 0 || argmax.data[size_t(r)] >= s.m)
      fail("feature map argmax[%lld] = %d outside [0, %lld)", (long long)r, argmax.data[size_t(r)], (long long)s.m);
  const bool finite = moderate(x);
  if (finite) {
    ++st.finite_checked[kFeatureMap];
    check_finite(phi);
    check_finite(shift);
    // Every feature is >= 0; the exponential maps' largest entry of a row is exactly e^0 = 1
    // (1/sqrt(m) for favor): the header promises it, and exp never overflows because of it.
    // Allowed: 4 ulps, for an exp approximation that is not exact at 0.
    for (int64_t r = 0; r < rows; ++r) {
      double mx = 0;
      for (int64_t f = 0; f < s.m; ++f) {
        const double y = double(phi.data[size_t(r * ldphi + f)]);
        if (!(y >= 0)) fail("feature map phi[%lld,%lld] = %g < 0", (long long)r, (long long)f, y);
        mx = std::max(mx, y);
      }
      if (exponential) {
        const double want = s.kind == FeatureMap::favor ? 1 / std::sqrt(double(s.m)) : 1.0;
        if (!(std::abs(mx - want) <= 4 * kEps<T> * want))
          fail("feature map row %lld: largest feature %.9g, want %.9g", (long long)r, mx, want);
      }
    }
  }
  if (!(in.u8() & 1)) return;
  ++st.backward[kFeatureMap];
  const int64_t ldg = s.m + in.below(3);
  auto gphi = rows_buffer<T>("g_phi", rows, s.m, ldg);
  const ValueSpec gspec{0, finite ? -1 : spec.special_log2, seed + 3};
  fill_values(gphi, gspec);
  auto gshift = flat<T>("g_shift", exponential ? rows : 0, T(0));
  fill_values(gshift, ValueSpec{0, -1, seed + 4});
  snapshot(gshift);
  auto gx = rows_buffer<T>("gx", rows, D, ldgx);
  std::fill_n(gx.ptr(), gx.len, output_pad<T>());
  snapshot(phi);
  snapshot(argmax);
  feature_map_backward(s, x.ptr(), ldx, rows, phi.ptr(), ldphi, exponential ? argmax.ptr() : nullptr, gphi.ptr(),
                       ldg, exponential ? gshift.ptr() : nullptr, gx.ptr(), ldgx);
  check_unchanged(x);
  check_unchanged(phi);
  check_unchanged(argmax);
  check_unchanged(gshift);
  // g_phi is overwritten (documented): only its padding must hold.
  for (int64_t i = 0; i < gphi.len; ++i)
    if (!gphi.inside[size_t(i)] && !same_bits(gphi.data[size_t(i)], input_pad<T>()))
      fail("g_phi padding element %lld overwritten", (long long)i);
  check_output(gx);
  if (finite) check_finite(gx);
}


// ---------------------------------------------------------------------------------------------
// Kernelized attention with relative positions (Luo et al.).
template <class T>
void kernelized_rpe_case(Bytes& in, uint64_t seed, Stats& st) {
  int64_t B = size_in(in, 1, 3), H = size_in(in, 1, 3), N = size_in(in, 1, 300), m = size_in(in, 1, 80);
  int64_t Dv = size_in(in, 1, 80);
  fit_budget({&B, &H, &N, &m, &Dv}, 1e5);
  KernelizedRpeParams<T> p;
  p.causal = in.u8() & 1;
  static const double kEpsChoices[] = {0.0, 1e-6, 1e-3, 1.0};
  p.eps = in.pick(kEpsChoices);
  p.threads = pick_threads(in);
  describe("kernelized_rpe<%s> B=%lld H=%lld N=%lld m=%lld Dv=%lld causal=%d eps=%g", type_name(T()), (long long)B,
           (long long)H, (long long)N, (long long)m, (long long)Dv, p.causal, p.eps);
  // Features are nonnegative (the contract): |x|, NaN kept.
  auto absval = [](double x) { return std::abs(x); };
  BHND<T> fq, fk;
  auto phi_q = tensor<T>("phi_q", B, H, N, m, pick_layout(in), in, input_pad<T>(), T(0), &fq);
  auto phi_k = tensor<T>("phi_k", B, H, N, m, pick_layout(in), in, input_pad<T>(), T(0), &fk);
  const ValueSpec sq = value_spec(in, seed + 1), sk = value_spec(in, seed + 2);
  fill_values(phi_q, sq, absval);
  fill_values(phi_k, sk, absval);
  describe("phi_q:%s%s phi_k:%s%s", kRegimeNames[sq.regime], sq.special_log2 >= 0 ? "+nonfinite" : "",
           kRegimeNames[sk.regime], sk.special_log2 >= 0 ? "+nonfinite" : "");
  snapshot(phi_q);
  snapshot(phi_k);
  p.phi_q = as_const(fq);
  p.phi_k = as_const(fk);
  auto v = input_tensor<T>("v", in, seed + 3, B, H, N, Dv, &p.v);
  // The bias: finite or -inf (the contract); NaN and +inf become -inf.
  const bool shared = in.u8() & 1;
  const int64_t R = 2 * N - 1, stride = shared ? 0 : R + in.below(3);
  auto bias = rows_buffer<T>("rel_bias", H, R, stride);
  const ValueSpec sb = value_spec(in, seed + 4);
  fill_values(bias, sb, [](double x) { return std::isfinite(x) ? x : -INFINITY; });
  describe("bias:%s%s%s", shared ? "shared/" : "", kRegimeNames[sb.regime], sb.special_log2 >= 0 ? "+neginf" : "");
  snapshot(bias);
  p.rel_bias = bias.ptr();
  p.bias_stride_h = stride;
  const bool has_l = in.u8() & 1, has_mu = in.u8() & 1;
  auto l = flat<T>("key_log_scale", has_l ? B * H * N : 0, T(0));
  auto mu = flat<T>("eps_log_scale", has_mu ? B * H * N : 0, T(0));
  const ValueSpec sl = value_spec(in, seed + 5);
  fill_values(l, ValueSpec{sl.regime, -1, sl.seed});  // finite log-scales
  fill_values(mu, ValueSpec{sl.regime, -1, sl.seed + 1});
  snapshot(l);
  snapshot(mu);
  p.key_log_scale = has_l ? l.ptr() : nullptr;
  p.eps_log_scale = has_mu ? mu.ptr() : nullptr;
  describe("log_scales:%s%s/%s", has_l ? "l" : "", has_mu ? "mu" : "", kRegimeNames[sl.regime]);
  Mask mask = make_mask(in, B, N, seed + 6);
  p.key_padding_mask = mask.present ? mask.buf.ptr() : nullptr;
  p.mask_stride_b = mask.stride;
  const bool finite = moderate(phi_q) && moderate(phi_k) && moderate(v) && moderate(l) && moderate(mu) &&
                      [&] {  // -inf offsets are part of the contract
                        for (int64_t i = 0; i < bias.len; ++i)
                          if (bias.inside[size_t(i)] && std::isfinite(double(bias.data[size_t(i)])) &&
                              std::abs(double(bias.data[size_t(i)])) > 10)
                            return false;
                        return true;
                      }();
  // Masked keys are never read (the header): NaN and inf in their phi_k, v and log-scale must
  // reach no output and no gradient, so some cases poison them after judging the inputs above.
  if (mask.present && (in.u8() & 1)) {
    for (int64_t b = 0; b < B; ++b)
      for (int64_t j = 0; j < N; ++j) {
        if (mask.allowed(b, j)) continue;
        for (int64_t h = 0; h < H; ++h) {
          std::fill_n(fk.row(b, h, j), m, std::numeric_limits<T>::quiet_NaN());
          std::fill_n(const_cast<T*>(p.v.row(b, h, j)), Dv, T(INFINITY));
          if (has_l) l.data[size_t((b * H + h) * N + j)] = T(-INFINITY);
        }
      }
    describe("masked-keys:poisoned");
    snapshot(phi_k);
    snapshot(v);
    snapshot(l);
  }
  BHND<T> outv;
  auto out = output_tensor<T>("out", in, B, H, N, Dv, &outv);
  auto den = flat<T>("den", B * H * N, output_pad<T>());
  auto direct = flat<uint8_t>("direct", B * H * N, output_pad<uint8_t>());
  kernelized_rpe_forward(p, outv, KernelizedRpeRows<T>{den.ptr(), direct.ptr()});
  for (auto* b : {&phi_q, &phi_k, &v, &bias, &l, &mu}) check_unchanged(*b);
  if (mask.present) check_unchanged(mask.buf);
  check_output(out);
  check_output(den);
  check_output(direct);
  for (int64_t i = 0; i < direct.len; ++i)
    if (direct.data[size_t(i)] > 1) fail("direct[%lld] = %d, want 0 or 1", (long long)i, direct.data[size_t(i)]);
  if (finite) {
    ++st.finite_checked[kKernelizedRpe];
    check_finite(out);
    check_finite(den);
  }
  if (!(in.u8() & 1)) return;
  ++st.backward[kKernelizedRpe];
  KernelizedRpeGrads<T> g;
  g.out = as_const(outv);
  g.den = den.ptr();
  g.direct = direct.ptr();
  auto gout = input_tensor<T>("grad_out", in, seed + 7, B, H, N, Dv, &g.grad_out, finite);
  auto gq = output_tensor<T>("grad_phi_q", in, B, H, N, m, &g.grad_phi_q);
  auto gk = output_tensor<T>("grad_phi_k", in, B, H, N, m, &g.grad_phi_k);
  auto gv = output_tensor<T>("grad_v", in, B, H, N, Dv, &g.grad_v);
  const bool want_gb = in.u8() & 1;
  auto gb = flat<T>("grad_rel_bias", want_gb ? (shared ? 1 : H) * R : 0, output_pad<T>());
  auto gl = flat<T>("grad_key_log_scale", has_l ? B * H * N : 0, output_pad<T>());
  auto gm = flat<T>("grad_eps_log_scale", has_mu ? B * H * N : 0, output_pad<T>());
  g.grad_rel_bias = want_gb ? gb.ptr() : nullptr;
  g.grad_key_log_scale = has_l ? gl.ptr() : nullptr;
  g.grad_eps_log_scale = has_mu ? gm.ptr() : nullptr;
  snapshot(out);
  snapshot(den);
  snapshot(direct);
  kernelized_rpe_backward(p, g);
  for (auto* b : {&phi_q, &phi_k, &v, &bias, &l, &mu, &gout, &out, &den}) check_unchanged(*b);
  check_unchanged(direct);
  for (auto* b : {&gq, &gk, &gv, &gb, &gl, &gm}) check_output(*b);
  if (finite && moderate(gout)) {
    // As for kernelized attention: with eps = 0 the gradient of phi_q is ~|v| / den, unbounded.
    if (p.eps > 0) check_finite(gq);
    for (auto* b : {&gk, &gv, &gb, &gl, &gm}) check_finite(*b);
  }
}


template void kernelized_case<float>(Bytes&, uint64_t, Stats&);
template void kernelized_case<double>(Bytes&, uint64_t, Stats&);
template void feature_map_case<float>(Bytes&, uint64_t, Stats&);
template void feature_map_case<double>(Bytes&, uint64_t, Stats&);
template void kernelized_rpe_case<float>(Bytes&, uint64_t, Stats&);
template void kernelized_rpe_case<double>(Bytes&, uint64_t, Stats&);

}  // namespace kernel_fuzz
