"""Bytes autograd saves between forward and backward, per operator, float32 against bfloat16
(B=1, H=8, N=4096, D=64): the memory figure of issue 13's half-precision rule.
    PYTHONPATH=python .venv/bin/python scripts/saved_bytes.py"""
import torch

import longattn

B, H, N, D = 1, 8, 4096, 64


def saved_bytes(fn, *inputs):
    seen = {}

    def pack(t):
        seen[(t.data_ptr(), t.dtype, tuple(t.shape))] = t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(*inputs)
    return sum(seen.values())


def main():
    g = torch.Generator().manual_seed(0)
    w = longattn.random_features(64, D, seed=0)
    bias = 0.1 * torch.randn(H, 2 * N - 1, generator=g)
    part = torch.rand(4, 2 * N - 1, generator=g)
    ops = {
        "softmax_attention": lambda q, k, v: longattn.softmax_attention(q, k, v),
        "kernelized_attention[elu]": lambda q, k, v: longattn.kernelized_attention(q, k, v, feature_map="elu"),
        "kernelized_attention[favor, rel_bias]": lambda q, k, v: longattn.kernelized_attention(
            q * D ** -0.25, k * D ** -0.25, v, feature_map="favor", projection=w, rel_bias=bias),
        "toeplitz_matmul": lambda q, k, v: longattn.toeplitz_matmul(bias, v),
        "yoso_attention": lambda q, k, v: longattn.yoso_attention(q, k, v, hash_bits=12, num_hashes=32, seed=1),
        "yoso_expectation": lambda q, k, v: longattn.yoso_expectation(q, k, v, hash_bits=12),
        "shatter_attention": lambda q, k, v: longattn.shatter_attention(
            q[:, 0], k[:, 0], v[:, :4], part),
    }
    print("| operator | float32 saved MiB | bfloat16 saved MiB | ratio |")
    print("|---|---:|---:|---:|")
    for name, fn in ops.items():
        sizes = []
        for dt in (torch.float32, torch.bfloat16):
            q, k, v = (torch.randn(B, H, N, D, generator=g).to(dt).requires_grad_() for _ in range(3))
            sizes.append(saved_bytes(fn, q, k, v) / 2**20)
        print(f"| `{name}` | {sizes[0]:.1f} | {sizes[1]:.1f} | {sizes[1] / sizes[0]:.2f} |")


if __name__ == "__main__":
    main()
