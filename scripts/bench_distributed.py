"""Forward+backward time and per-process memory of the sequence-parallel operators.

  .venv/bin/python scripts/bench_distributed.py --op softmax --causal --n 16384 --procs 4 --threads 1
  .venv/bin/python scripts/bench_distributed.py --op softmax --causal --n 16384 --procs 1 --threads 4

P processes on 127.0.0.1 (Gloo), each holding N/P tokens of B x H x N x D float32 inputs. Per
process: wall time of forward + backward (after one warm-up when --warmup), peak RSS, and the
peak RSS beyond the inputs, outputs and gradients (measured after they are allocated).
--procs 1 runs the single-process operator (longattn.<op>) instead, without a process group.
"""
import argparse
import datetime
import os
import resource
import socket
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "python"))


def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def call(a, q, k, v, dist_mode):
    import longattn
    import longattn.distributed as ld
    mod = ld if dist_mode else longattn
    if a.op == "softmax":
        return mod.softmax_attention(q, k, v, causal=a.causal)
    if a.op == "sikf":
        return mod.kernelized_attention(q, k, v, feature_map="sikf", causal=a.causal)
    if a.op == "toeplitz":
        c = torch.randn(q.shape[1], 2 * a.n - 1) * 0.01
        return mod.toeplitz_matmul(c, v, causal=a.causal)
    raise ValueError(a.op)


def worker(rank, a, port, results):
    torch.set_num_threads(a.threads)
    P = a.procs
    if P > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=P, timeout=datetime.timedelta(seconds=1800))
    import longattn  # noqa: F401
    L = -(-a.n // P)
    n = max(0, min(L, a.n - rank * L))
    g = torch.Generator().manual_seed(rank)
    q, k, v = (torch.randn(a.b, a.h, n, a.d, generator=g).requires_grad_() for _ in range(3))
    w = torch.randn(a.b, a.h, n, a.d, generator=g)
    for it in range(2 if a.warmup else 1):
        for t in (q, k, v):
            t.grad = None
        if P > 1:
            dist.barrier()
        base = rss_mib()  # inputs allocated (and, after the warm-up, gradients and outputs)
        t0 = time.perf_counter()
        out = call(a, q, k, v, P > 1)
        (out * w).sum().backward()
        if P > 1:
            dist.barrier()
        dt = time.perf_counter() - t0
    outputs_mib = 4 * out.numel() * 4 / 2**20  # out and the three gradients
    results.put((rank, dt, peak_mib(), peak_mib() - base - (0 if a.warmup else outputs_mib)))
    if P > 1:
        dist.destroy_process_group()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--op", choices=["softmax", "sikf", "toeplitz"], default="softmax")
    p.add_argument("--causal", action="store_true")
    p.add_argument("--n", type=int, default=16384)
    p.add_argument("--b", type=int, default=1)
    p.add_argument("--h", type=int, default=8)
    p.add_argument("--d", type=int, default=64)
    p.add_argument("--procs", type=int, default=4)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--warmup", action="store_true")
    a = p.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    results = ctx.SimpleQueue()
    procs = [ctx.Process(target=worker, args=(r, a, port, results)) for r in range(a.procs)]
    for pr in procs:
        pr.start()
    for pr in procs:
        pr.join()
    rows = sorted(results.get() for _ in range(a.procs) if not results.empty())
    load = os.getloadavg()[0]
    print(f"op={a.op} causal={a.causal} N={a.n} B={a.b} H={a.h} D={a.d} procs={a.procs} "
          f"threads/proc={a.threads} load1={load:.1f}")
    for r, dt, peak, extra in rows:
        print(f"  rank {r}: fwd+bwd {dt:.2f} s, peak RSS {peak:.0f} MiB, beyond inputs/outputs/grads {extra:.0f} MiB")


if __name__ == "__main__":
    main()
