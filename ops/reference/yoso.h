// The reference path of yoso_attention and yoso_expectation (ops/common.h,
// takes_reference_path): the same signatures and outputs as the CPU kernels of the internal
// operators `_yoso_hash`, `_yoso_forward`, `_yoso_backward_lsh`, `_yoso_expectation_forward` and
// `_yoso_expectation_backward`, written with ATen operations, device-generic; the same hash codes
// as the CPU kernel for the same seed.
#pragma once
#include <torch/types.h>

#include <tuple>

namespace longattn::ops::reference {

std::tuple<at::Tensor, at::Tensor> yoso_hash(const at::Tensor& q, const at::Tensor& k,
                                             const c10::optional<at::Tensor>& mask, int64_t hash_bits,
                                             int64_t num_hashes, int64_t seed, int64_t hashing);
at::Tensor yoso_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                        const at::Tensor& q_codes, const at::Tensor& k_codes, int64_t hash_bits);
std::tuple<at::Tensor, at::Tensor, at::Tensor> yoso_backward_lsh(const at::Tensor& grad_out, const at::Tensor& q,
                                                                 const at::Tensor& k, const at::Tensor& v,
                                                                 const at::Tensor& q_codes,
                                                                 const at::Tensor& k_codes, int64_t hash_bits);
at::Tensor yoso_expectation_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                    const c10::optional<at::Tensor>& mask, int64_t hash_bits);
std::tuple<at::Tensor, at::Tensor, at::Tensor> yoso_expectation_backward(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const c10::optional<at::Tensor>& mask, int64_t hash_bits, int64_t derivative);

}  // namespace longattn::ops::reference
