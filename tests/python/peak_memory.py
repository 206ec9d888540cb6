"""Measured peak memory of one call, for the reference path's stated memory formulas (#17).

torch keeps no peak-memory statistic for CPU tensors, so the call runs in a child process where
the kernel measures it: after the inputs are made, the peak resident set (VmHWM) is reset through
/proc/self/clear_refs, and the call's peak is VmHWM minus the resident set at that moment. glibc
serves every allocation of 128 KiB or more by mmap and returns it on free (a fixed
MALLOC_MMAP_THRESHOLD_, so the threshold does not grow), so freed temporaries do not linger in the
baseline and the figure is the most that was live at once: an upper bound on what torch held,
never an underestimate by reuse.
"""

import json
import os
import subprocess
import sys
import textwrap

_CHILD = r"""
import gc, json, sys
import torch
torch.set_num_threads(1)
import longattn
{setup}
gc.collect()
def _rss(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(field)
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
_base = _rss("VmRSS")
{call}
_peak = _rss("VmHWM")
print(json.dumps({{"peak_extra_bytes": _peak - _base}}))
"""


def peak_extra_bytes(setup: str, call: str, timeout: float = 600) -> int:
    """Peak memory, in bytes, that `call` adds to a process that has run `setup` (Python source;
    `torch` and `longattn` are imported, one thread)."""
    src = _CHILD.format(setup=textwrap.dedent(setup), call=textwrap.dedent(call))
    pkg = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python")
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([pkg, os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", src], capture_output=True, text=True, env=env,
                         timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"peak-memory child failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_extra_bytes"]
