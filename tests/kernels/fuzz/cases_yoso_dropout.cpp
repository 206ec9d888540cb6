// Fuzz cases of YOSO (LSH and expectation) and of the counter-based dropout.
#include "fuzz/kernel_fuzz_common.h"

namespace kernel_fuzz {

// ---------------------------------------------------------------------------------------------
// YOSO.
template <class T>
struct YosoProblem {
  YosoParams<T> p;
  Buf<T> q, k, v;
  Mask key_mask, query_mask;
  int64_t B = 0, H = 0, Nq = 0, Nk = 0, D = 0, Dv = 0;
  bool finite = false;

  void check_inputs() const {
    for (auto* b : {&q, &k, &v}) check_unchanged(*b);
    if (key_mask.present) check_unchanged(key_mask.buf);
    if (query_mask.present) check_unchanged(query_mask.buf);
  }
};

template <class T>
YosoProblem<T> yoso_problem(Bytes& in, uint64_t seed, const char* what, double budget) {
  YosoProblem<T> y;
  y.B = size_in(in, 1, 3), y.H = size_in(in, 1, 3), y.Nq = size_in(in, 1, 300), y.Nk = size_in(in, 1, 300);
  y.D = size_in(in, 1, 80), y.Dv = size_in(in, 1, 80);
  const bool self = in.u8() & 1;
  if (self) y.Nk = y.Nq;
  fit_budget({&y.B, &y.H, &y.Nq, &y.Nk, &y.D}, budget);
  fit_budget({&y.B, &y.H, &y.Nq, &y.Nk, &y.Dv}, budget);
  if (self) y.Nq = y.Nk = std::min(y.Nq, y.Nk);
  YosoParams<T>& p = y.p;
  static const int kBits[] = {8, 1, 2, 5, 16, 30};
  p.hash_bits = in.pick(kBits);
  p.num_hashes = int(size_in(in, 1, 64));
  p.seed = in.u64();
  p.hashing = (in.u8() & 1) ? YosoHashing::hadamard : YosoHashing::gaussian;
  p.threads = pick_threads(in);
  describe("%s<%s> B=%lld H=%lld Nq=%lld Nk=%lld D=%lld Dv=%lld bits=%d hashes=%d hashing=%s", what, type_name(T()),
           (long long)y.B, (long long)y.H, (long long)y.Nq, (long long)y.Nk, (long long)y.D, (long long)y.Dv,
           p.hash_bits, p.num_hashes, p.hashing == YosoHashing::hadamard ? "hadamard" : "gaussian");
  y.q = input_tensor<T>("q", in, seed + 1, y.B, y.H, y.Nq, y.D, &p.q);
  y.k = input_tensor<T>("k", in, seed + 2, y.B, y.H, y.Nk, y.D, &p.k);
  y.v = input_tensor<T>("v", in, seed + 3, y.B, y.H, y.Nk, y.Dv, &p.v);
  y.key_mask = make_mask(in, y.B, y.Nk, seed + 4, "key_mask");
  p.key_padding_mask = y.key_mask.present ? y.key_mask.buf.ptr() : nullptr;
  p.key_mask_stride_b = y.key_mask.stride;
  y.query_mask = make_mask(in, y.B, y.Nq, seed + 5, "query_mask");
  p.query_padding_mask = y.query_mask.present ? y.query_mask.buf.ptr() : nullptr;
  p.query_mask_stride_b = y.query_mask.stride;
  y.finite = moderate(y.q) && moderate(y.k) && moderate(y.v);
  return y;
}

template <class T>
struct YosoGradBufs {
  Buf<T> gout, gq, gk, gv;
  YosoGrads<T> g;
};

template <class T>
YosoGradBufs<T> yoso_grads(Bytes& in, uint64_t seed, const YosoProblem<T>& y) {
  YosoGradBufs<T> r;
  r.gout = input_tensor<T>("grad_out", in, seed, y.B, y.H, y.Nq, y.Dv, &r.g.grad_out, y.finite);
  r.gq = flat<T>("grad_q", y.B * y.H * y.Nq * y.D, output_pad<T>());
  r.gk = flat<T>("grad_k", y.B * y.H * y.Nk * y.D, output_pad<T>());
  r.gv = flat<T>("grad_v", y.B * y.H * y.Nk * y.Dv, output_pad<T>());
  r.g.grad_q = BHND<T>::contiguous(r.gq.ptr(), y.B, y.H, y.Nq, y.D);
  r.g.grad_k = BHND<T>::contiguous(r.gk.ptr(), y.B, y.H, y.Nk, y.D);
  r.g.grad_v = BHND<T>::contiguous(r.gv.ptr(), y.B, y.H, y.Nk, y.Dv);
  return r;
}

template <class T>
void check_yoso_grads(const YosoProblem<T>& y, const YosoGradBufs<T>& r) {
  y.check_inputs();
  check_unchanged(r.gout);
  for (auto* b : {&r.gq, &r.gk, &r.gv}) check_output(*b);
  if (y.finite && moderate(r.gout))
    for (auto* b : {&r.gq, &r.gk, &r.gv}) check_finite(*b);
}

// Codes [B, H, m, N]: -1 exactly for masked rows, else a code of `bits` bits.
void check_codes(const Buf<int32_t>& codes, const Mask& mask, int64_t B, int64_t H, int64_t m, int64_t N, int bits) {
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < H * m * N; ++i) {
      const int64_t n = i % N;
      const int32_t c = codes.data[size_t(b * H * m * N + i)];
      const bool allowed = mask.allowed(b, n);
      if (allowed ? (c < 0 || int64_t(c) >= (int64_t(1) << bits)) : c != -1)
        fail("%s[b=%lld, n=%lld] = %d: want %s", codes.name.c_str(), (long long)b, (long long)n, c,
             allowed ? "a code of hash_bits bits" : "-1 (masked row)");
    }
}

template <class T>
void yoso_lsh_case(Bytes& in, uint64_t seed, Stats& st) {
  YosoProblem<T> y = yoso_problem<T>(in, seed, "yoso_lsh", 4e5);
  // The sizes are final; the hash count scales the work of every call after them.
  int64_t hashes = y.p.num_hashes;
  int64_t work = y.B * y.H * (y.Nq + y.Nk) * std::max(y.D, y.Dv);
  while (hashes > 1 && double(hashes) * double(work) > 4e5) hashes = (hashes + 1) / 2;
  y.p.num_hashes = int(hashes);
  const int64_t m = hashes;
  auto qc = flat<int32_t>("q_codes", y.B * y.H * m * y.Nq, output_pad<int32_t>());
  auto kc = flat<int32_t>("k_codes", y.B * y.H * m * y.Nk, output_pad<int32_t>());
  yoso_hash(y.p, qc.ptr(), kc.ptr());
  y.check_inputs();
  check_output(qc);
  check_output(kc);
  check_codes(kc, y.key_mask, y.B, y.H, m, y.Nk, y.p.hash_bits);
  check_codes(qc, y.query_mask, y.B, y.H, m, y.Nq, y.p.hash_bits);
  snapshot(qc);
  snapshot(kc);
  BHND<T> outv;
  auto out = output_tensor<T>("out", in, y.B, y.H, y.Nq, y.Dv, &outv);
  yoso_forward(y.p, qc.ptr(), kc.ptr(), outv);
  y.check_inputs();
  check_unchanged(qc);
  check_unchanged(kc);
  check_output(out);
  if (y.finite) {
    ++st.finite_checked[kYosoLsh];
    check_finite(out);
  }
  if (!(in.u8() & 1)) return;
  ++st.backward[kYosoLsh];
  auto r = yoso_grads<T>(in, seed + 6, y);
  if (in.u8() & 1) {
    describe("backward=lsh");
    yoso_backward_lsh(y.p, qc.ptr(), kc.ptr(), r.g);
    check_unchanged(qc);
    check_unchanged(kc);
  } else {
    describe("backward=exact");
    yoso_backward_exact(y.p, r.g);
  }
  check_yoso_grads(y, r);
}

template <class T>
void yoso_expectation_case(Bytes& in, uint64_t seed, Stats& st) {
  YosoProblem<T> y = yoso_problem<T>(in, seed, "yoso_expectation", 1.5e6);
  BHND<T> outv;
  auto out = output_tensor<T>("out", in, y.B, y.H, y.Nq, y.Dv, &outv);
  yoso_expectation_forward(y.p, outv);
  y.check_inputs();
  check_output(out);
  if (y.finite) {
    ++st.finite_checked[kYosoExpectation];
    check_finite(out);
  }
  if (!(in.u8() & 1)) return;
  ++st.backward[kYosoExpectation];
  auto r = yoso_grads<T>(in, seed + 6, y);
  const YosoDerivative deriv = (in.u8() & 1) ? YosoDerivative::surrogate : YosoDerivative::exact;
  describe("derivative=%s", deriv == YosoDerivative::exact ? "exact" : "surrogate");
  yoso_expectation_backward(y.p, r.g, deriv);
  check_yoso_grads(y, r);
}


// ---------------------------------------------------------------------------------------------
// Dropout: exactly x * scale where dropout_mask keeps, 0 elsewhere (NaN included: a dropped
// element is 0 whatever it held, as the header says).
template <class T>
void dropout_case(Bytes& in, uint64_t seed, Stats& st) {
  const int64_t n = size_in(in, 1, 300) * (1 + in.below(16));
  static const double kP[] = {0.1, 0.0, 0.5, 0.9, kDropoutMaxP, 1.0 / 65536, 0.3333};
  DropoutParams p;
  p.p = in.pick(kP);
  p.seed = in.u64();
  p.threads = pick_threads(in);
  const bool in_place = in.u8() & 1;
  describe("dropout<%s> n=%lld p=%g seed=%llu in_place=%d", type_name(T()), (long long)n, p.p,
           (unsigned long long)p.seed, in_place);
  auto x = flat<T>("x", n, T(0));
  const ValueSpec spec = value_spec(in, seed + 1);
  fill_values(x, spec);
  describe("x:%s%s", kRegimeNames[spec.regime], spec.special_log2 >= 0 ? "+nonfinite" : "");
  snapshot(x);
  auto keep = flat<uint8_t>("keep", n, output_pad<uint8_t>());
  dropout_mask(p, keep.ptr(), n);
  check_output(keep);
  auto out = flat<T>("out", in_place ? 0 : n, output_pad<T>());
  T* dst = in_place ? x.ptr() : out.ptr();
  dropout_apply(p, x.ptr(), dst, n);
  if (!in_place) {
    check_unchanged(x);
    check_output(out);
  }
  const T scale = T(dropout_scale(p.p));
  for (int64_t i = 0; i < n; ++i) {
    if (keep.data[size_t(i)] > 1) fail("dropout keep[%lld] = %d", (long long)i, keep.data[size_t(i)]);
    const T want = keep.data[size_t(i)] ? T(x.snapshot[size_t(i)] * scale) : T(0);
    if (!same_bits(dst[i], want) && !(std::isnan(double(want)) && std::isnan(double(dst[i]))))
      fail("dropout out[%lld] = %.9g, want %.9g (x = %.9g, keep = %d)", (long long)i, double(dst[i]), double(want),
           double(x.snapshot[size_t(i)]), keep.data[size_t(i)]);
  }
  ++st.reference_checked[kDropout];
  if (moderate(x)) ++st.finite_checked[kDropout];
}


template void yoso_lsh_case<float>(Bytes&, uint64_t, Stats&);
template void yoso_lsh_case<double>(Bytes&, uint64_t, Stats&);
template void yoso_expectation_case<float>(Bytes&, uint64_t, Stats&);
template void yoso_expectation_case<double>(Bytes&, uint64_t, Stats&);
template void dropout_case<float>(Bytes&, uint64_t, Stats&);
template void dropout_case<double>(Bytes&, uint64_t, Stats&);

}  // namespace kernel_fuzz
