"""nn modules given a process group run sequence-parallel and equal the single-process module."""
import math

import torch

import dist_harness


def _slice(N, P, r):
    L = math.ceil(N / P)
    return slice(min(r * L, N), min((r + 1) * L, N))


def _modules_body(rank, P, N):
    import torch.distributed as dist
    from longattn.nn import FastRPB, Shatter, YOSOAttention
    world = dist.group.WORLD
    s = _slice(N, P, rank)
    gen = torch.Generator().manual_seed(3)
    tol = dict(rtol=1e-9, atol=1e-10)

    # FastRPB: the coefficients' gradient is the whole sequence's on every rank
    torch.manual_seed(0)
    ref = FastRPB(2, 64, causal=True).double()
    torch.manual_seed(0)
    mine = FastRPB(2, 64, causal=True, process_group=world).double()
    v = torch.randn(2, 2, N, 3, generator=gen, dtype=torch.float64)
    w = torch.randn(2, 2, N, 3, generator=gen, dtype=torch.float64)
    vr, vm = v.clone().requires_grad_(), v[:, :, s].clone().requires_grad_()
    (ref(vr) * w).sum().backward()
    out = mine(vm)
    (out * w[:, :, s]).sum().backward()
    torch.testing.assert_close(out, ref(v)[:, :, s].detach(), **tol)
    torch.testing.assert_close(vm.grad, vr.grad[:, :, s], **tol)
    torch.testing.assert_close(mine.weights.grad, ref.weights.grad, **tol)

    # Shatter: projections' gradients are per-rank shares (summed here), the partition's whole
    torch.manual_seed(1)
    ref = Shatter(8, 3, qk_dim=4, causal=True).double()
    torch.manual_seed(1)
    mine = Shatter(8, 3, qk_dim=4, causal=True, process_group=world).double()
    x = torch.randn(2, N, 8, generator=gen, dtype=torch.float64)
    w = torch.randn(2, N, 8, generator=gen, dtype=torch.float64)
    (ref(x) * w).sum().backward()
    out = mine(x[:, s])
    (out * w[:, s]).sum().backward()
    torch.testing.assert_close(out, ref(x)[:, s].detach(), **tol)
    for (name, a), (_, b) in zip(mine.named_parameters(), ref.named_parameters()):
        g = a.grad.clone()
        if not name.startswith("partition"):
            dist.all_reduce(g)
        torch.testing.assert_close(g, b.grad, **tol, msg=name)

    # YOSOAttention (eval: the fixed seed)
    ref = YOSOAttention(2, 3, 4, hashing="gaussian", seed=5).eval()
    mine = YOSOAttention(2, 3, 4, hashing="gaussian", seed=5, process_group=world).eval()
    q, k, v = (torch.randn(2, 2, N, 6, generator=gen, dtype=torch.float64) for _ in range(3))
    torch.testing.assert_close(mine(q[:, :, s], k[:, :, s], v[:, :, s]), ref(q, k, v)[:, :, s], **tol)


def test_modules_with_a_process_group_match_the_single_process_modules():
    dist_harness.check(3, _modules_body, 23)
