"""Runs a test body on P local processes joined by a Gloo process group on 127.0.0.1.

Every rank runs fn(rank, P, *args); an exception on any rank fails the test with that rank's
traceback, and a run that outlives `timeout` seconds is killed and fails (never a hang).
"""
import datetime
import os
import socket
import sys
import time
import traceback

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

PG_TIMEOUT_S = 30


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, P, port, fn, args, errq):
    torch.set_num_threads(1)
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    try:
        dist.init_process_group("gloo", rank=rank, world_size=P,
                                timeout=datetime.timedelta(seconds=PG_TIMEOUT_S))
        import longattn  # noqa: F401  (loads the operator library in this process)
        fn(rank, P, *args)
        dist.barrier()
        dist.destroy_process_group()
    except BaseException:
        errq.put((rank, traceback.format_exc()))
        sys.exit(1)


def run(P, fn, *args, timeout=90):
    """Runs fn on P ranks; returns the list of (rank, traceback) of the ranks that failed
    after killing any rank still running at the deadline (or raises on a timeout when none
    reported an error)."""
    ctx = mp.get_context("spawn")
    errq = ctx.SimpleQueue()
    port = free_port()
    procs = [ctx.Process(target=_worker, args=(r, P, port, fn, args, errq)) for r in range(P)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + timeout
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    hung = [r for r, p in enumerate(procs) if p.is_alive()]
    for r in hung:
        procs[r].kill()
        procs[r].join()
    errors = []
    while not errq.empty():
        errors.append(errq.get())
    reported = {r for r, _ in errors}
    for r, p in enumerate(procs):  # a rank that died before reporting (crash, import error)
        if r not in hung and r not in reported and p.exitcode != 0:
            errors.append((r, f"exited with code {p.exitcode} without a Python error"))
    if hung and not errors:
        raise TimeoutError(f"ranks {hung} of {P} still running after {timeout} s")
    return sorted(errors), hung


def check(P, fn, *args, timeout=90):
    """run() that fails the calling test on any rank's error or a hang."""
    errors, hung = run(P, fn, *args, timeout=timeout)
    if errors or hung:
        msg = "\n".join(f"--- rank {r} ---\n{tb}" for r, tb in errors)
        raise AssertionError(f"{len(errors)} of {P} ranks failed, {len(hung)} hung:\n{msg}")
