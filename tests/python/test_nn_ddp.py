"""The Python encoder (longattn.nn.Classifier) under torch.nn.parallel.DistributedDataParallel on Gloo,
2 processes on loopback, against one process on the combined batch: the same parameters up to float32
summation order, dropout included (longattn.nn.row_offset gives each rank the combined batch's masks)."""
import datetime
import os
import socket
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from longattn.nn import Classifier, row_offset

from test_nn_encoder import detect_batch, tiny

BATCH, STEPS = 16, 10


def _train(rank, world, port, attention, out):
    torch.set_num_threads(1)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=120))
    torch.manual_seed(0)  # the same initial model and the same dropout seeds on every rank
    g = torch.Generator().manual_seed(1)  # the same global batches on every rank
    model = Classifier(tiny(attention, dropout=0.1))
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    lo, hi = BATCH * rank // world, BATCH * (rank + 1) // world  # this rank's rows of the global batch
    for _ in range(STEPS):
        tokens, mask, labels = detect_batch(BATCH, generator=g)
        with row_offset(lo):
            logits = net(tokens[lo:hi], mask[lo:hi])
        # DDP averages the ranks' gradients: with equal shards the mean of the shard means is the mean.
        loss = torch.nn.functional.cross_entropy(logits, labels[lo:hi])
        opt.zero_grad()
        loss.backward()
        opt.step()
    if rank == 0:
        torch.save(model.state_dict(), out)
    if world > 1:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="torch without Gloo")
@pytest.mark.parametrize("attention", ["softmax", "sikf"])
def test_ddp_two_processes_match_one_process_on_the_combined_batch(attention):
    with tempfile.TemporaryDirectory() as d:
        one, two = os.path.join(d, "one.pt"), os.path.join(d, "two.pt")
        _train(0, 1, 0, attention, one)
        mp.spawn(_train, args=(2, _free_port(), attention, two), nprocs=2, join=True)
        a, b = torch.load(one), torch.load(two)
    assert a.keys() == b.keys()
    # Gradients that differ only in float32 summation order (~1e-7 relative) go through 10 AdamW steps
    # at lr 3e-3: a coordinate whose gradient is near zero can still move by a good part of lr there
    # (Adam divides by the gradient's own scale), a typical one by far less. A dropout mask or a row
    # out of place moves typical coordinates by O(lr) = 3e-3. Bounds (as tests/train's): the largest
    # difference below lr / 3, the mean below lr / 300.
    diffs = torch.cat([(a[k] - b[k]).abs().flatten() for k in a])
    print(f"{attention}: largest difference {diffs.max().item():.3g}, mean {diffs.mean().item():.3g}")
    assert diffs.max().item() < 1e-3, diffs.max().item()
    assert diffs.mean().item() < 1e-5, diffs.mean().item()


def test_row_offset_gives_the_rows_their_masks_in_the_combined_batch():
    from longattn.nn import Dropout
    drop = Dropout(0.5).train()
    x = torch.ones(6, 5, 8)
    torch.manual_seed(3)
    whole = drop(x)
    torch.manual_seed(3)
    with row_offset(2):
        part = drop(x[2:5])
    assert torch.equal(part, whole[2:5])
    torch.manual_seed(3)
    assert not torch.equal(drop(x[2:5]), whole[2:5])  # without the offset: rows 0..2's masks
    with pytest.raises(ValueError, match="multiple of 4"), row_offset(1):
        drop(torch.ones(2, 3))
