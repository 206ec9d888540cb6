"""Forward time and share of directly computed rows of kernelized_rpe_attention for the bias
families of issue 12 (docs/toeplitz.md). Usage: python scripts/bench_kernelized_rpe.py THREADS N"""
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "python"))
import longattn  # noqa: E402

torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
B, H, N, m, Dv = 1, 2, int(sys.argv[2]) if len(sys.argv) > 2 else 2048, 32, 32
g = torch.Generator().manual_seed(0)
fq, fk = torch.rand(B, H, N, m, generator=g), torch.rand(B, H, N, m, generator=g)
v = torch.randn(B, H, N, Dv, generator=g)
r = torch.arange(-(N - 1), N, dtype=torch.float32)
u = r / (N - 1)
cases = {
    "learned-init N(0,0.02)": 0.02 * torch.randn(H, 2 * N - 1, generator=g),
    "random sigma 1": torch.randn(H, 2 * N - 1, generator=g),
    "random sigma 3": 3 * torch.randn(H, 2 * N - 1, generator=g),
    "ramp spread 200": (100 * u).expand(H, -1).contiguous(),
    "alibi -0.05|r|": (-0.05 * r.abs()).expand(H, -1).contiguous(),
    "step 40 at r=-N/3": torch.where(r >= -(N // 3), 40.0, 0.0).expand(H, -1).contiguous(),
}
for name, b in cases.items():
    for causal in (False, True):
        _, _, direct = torch.ops.longattn._kernelized_rpe_forward(fq, fk, v, b, None, None, None, causal, 0.0)
        t = time.perf_counter()
        z = longattn.kernelized_rpe_attention(fq, fk, v, b, causal=causal)
        dt = time.perf_counter() - t
        print(f"{name:24s} causal={causal!s:5s} direct rows {direct.float().mean().item():6.1%}  forward {dt*1e3:8.1f} ms")
