// Our own FFT for convolutions over many channels at once (FFTW is GPL; torch's FFT is not
// reachable from the kernels).
//
// Design for the Toeplitz / relative-position kernels: the data are [N, C] per (batch, head)
// with the channels contiguous, so the transform runs along N and every butterfly is one
// vector operation over W channels ("lanes"). No transposes.
//
// Layout of a batch of W complex signals of length n: element k occupies 2W consecutive
// values, first the W real parts, then the W imaginary parts ("[n][2][W]"). Two real
// channels ride in one complex lane (real and imaginary part); a convolution with a real
// kernel keeps them apart, so no unpacking step is needed.
//
// Lengths are 2^k or 3 * 2^k (one radix-3 step, then radix-4 steps and a radix-2 leaf). The forward transform is a
// depth-first decimation in frequency that leaves the spectrum in a fixed permuted order; the
// inverse takes that order back to natural order. Pointwise products of spectra (all a
// convolution needs) do not care about the order, so no bit-reversal pass is ever made.
// Depth-first recursion keeps sub-transforms in cache once they fit.
#pragma once
#include "kernels/common/scratch.h"
#include "kernels/common/isa_namespace.h"
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <vector>

namespace longattn::kernels {
LONGATTN_ISA_BEGIN
namespace fft {

// Channels per butterfly vector: one register of the level (64 bytes with AVX-512, 32 otherwise).
// Wider than the registers, the radix-4 butterflies' 16 live vectors spill (with AVX2, 64-byte
// vectors made the FFT ~5x slower than this).
#if defined(__AVX512F__)
constexpr int kVectorBytes = 64;
#else
constexpr int kVectorBytes = 32;
#endif
template <class T>
constexpr int kLanes = static_cast<int>(kVectorBytes / sizeof(T));

// Smallest length of the form 2^k or 3 * 2^k that is >= n (n >= 1).
int64_t fast_length(int64_t n);

// Precomputed twiddles for one length; immutable once built, shared between threads.
template <class T>
struct Plan {
  int64_t n = 0;
  // Radix-4 stage of size m (a power of two >= 4): for k in [0, m/4) the six values
  // re/im of w^k, w^2k, w^3k with w = exp(-2 pi i / m), starting at twiddles[offset[log2 m]].
  std::vector<T> twiddles;
  std::vector<int64_t> offset;
  // Lengths 3 * 2^k start with one radix-3 step: re/im of w^k, w^2k (w = exp(-2 pi i / n)),
  // k < n / 3, four values per k.
  std::vector<T> twiddles3;
  // order[p] = the frequency held at position p of the permuted spectrum.
  std::vector<int64_t> order;
};

// The plan for length n (2^k or 3 * 2^k), built once and cached; thread-safe.
template <class T>
std::shared_ptr<const Plan<T>> plan(int64_t n);

// In place, W lanes, layout [n][2][W]:
//   forward: natural-order signal -> permuted spectrum, X[f] = sum_t x[t] exp(-2 pi i f t / n)
//   inverse: permuted spectrum -> natural-order signal times n (unnormalised).
template <class T, int W>
void forward(const Plan<T>& p, T* data);
template <class T, int W>
void inverse(const Plan<T>& p, T* data);

// Convolution helpers (same layout and order):
//   forward_padded: forward of a signal whose elements [valid, n) are zero; the caller need not
//     write them (when valid <= n/2 the first step skips them, otherwise they are zeroed here);
//   inverse_product: data[f] *= z[f] (conj(z[f]) when `conjugate`; z a one-lane spectrum
//     [n][2], nullptr = none), then the inverse; only outputs [0, keep) are guaranteed (with
//     keep <= n/2 the last step computes only those), the rest is scratch.
template <class T, int W>
void forward_padded(const Plan<T>& p, T* data, int64_t valid);
template <class T, int W>
void inverse_product(const Plan<T>& p, T* data, const T* z, bool conjugate, int64_t keep);

}  // namespace fft
LONGATTN_ISA_END
}  // namespace longattn::kernels
