"""`pip install` into a user's own environment (issue #13, part 1), as a user would do it.

A fresh virtual environment that sees the shared environment's packages (torch, scikit-build-core,
pip) through a .pth file, as scripts/setup_env.sh does for .venv: nothing is downloaded
(--no-index). Into it, `pip install --no-build-isolation` of a copy of this checkout (the files git
tracks, plus new ones it does not ignore: no build folders, no in-tree library), then, from a
folder outside the copy, `import longattn` and one forward and backward of every operator, and the
`longattn` command. The same build folder then gives `pip wheel` (incrementally), whose contents
and compile flags are checked: the wheel's library and tool only, built without -march=native.

Slow (a full CMake build of the library and the tool; ccache makes reruns quick): marked
`pip_install`, so `-m "not pip_install"` leaves it out of a quick run.
"""
import glob
import os
import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
pytestmark = pytest.mark.pip_install

# Run by the fresh environment's interpreter from outside the copy.
SMOKE = r'''
import os, sys, torch
import longattn
assert longattn.__file__.startswith(sys.argv[1]), longattn.__file__
torch.manual_seed(0)
B, H, N, D = 2, 2, 16, 8

def t(*shape, nonneg=False):
    x = torch.randn(*shape, dtype=torch.float64)
    return (x.abs() if nonneg else x).requires_grad_()

def check(name, out, *inputs):
    out.square().sum().backward()
    for x in inputs:
        assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0, name
    assert torch.isfinite(out).all(), name
    print("ok", name, tuple(out.shape))

mask = torch.ones(B, N, dtype=torch.bool); mask[1, -3:] = False
q, k, v, b = t(B, H, N, D), t(B, H, N, D), t(B, H, N, D), t(H, 2 * N - 1)
check("softmax_attention", longattn.softmax_attention(q, k, v, causal=True, key_padding_mask=mask, rel_bias=b), q, k, v, b)
q, k, v = t(B, H, N, D), t(B, H, N, D), t(B, H, N, D)
check("kernelized_attention", longattn.kernelized_attention(q, k, v, feature_map="elu", key_padding_mask=mask), q, k, v)
w = longattn.random_features(16, D, seed=1, dtype=torch.float64)
assert w.shape == (16, D)
q, k, v = t(B, H, N, D), t(B, H, N, D), t(B, H, N, D)
check("kernelized_attention favor", longattn.kernelized_attention(q, k, v, feature_map="favor", projection=w, causal=True), q, k, v)
pq, pk, v, b = t(B, H, N, 4, nonneg=True), t(B, H, N, 4, nonneg=True), t(B, H, N, D), t(H, 2 * N - 1)
check("kernelized_rpe_attention", longattn.kernelized_rpe_attention(pq, pk, v, b), pq, pk, v, b)
c, x = t(H, 2 * N - 1), t(B, H, N, D)
check("toeplitz_matmul", longattn.toeplitz_matmul(c, x), c, x)
r, cc, x = t(H, 7), t(H, 7), t(B, H, 16, D)
check("toeplitz_matmul_2d", longattn.toeplitz_matmul_2d(r, cc, x, height=4, width=4), r, cc, x)
q, k, v, p = t(B, N, D), t(B, N, D), t(B, 3, N, D), t(3, 2 * N - 1)
check("shatter_attention", longattn.shatter_attention(q, k, v, p, causal=True), q, k, v, p)
q, k, v = t(B, H, N, D), t(B, H, N, D), t(B, H, N, D)
check("yoso_attention", longattn.yoso_attention(q, k, v, hash_bits=4, num_hashes=16, seed=3), q, k, v)
q, k, v = t(B, H, N, D), t(B, H, N, D), t(B, H, N, D)
check("yoso_expectation", longattn.yoso_expectation(q, k, v, hash_bits=4), q, k, v)
x = t(B, H, N, D)
check("dropout", longattn.dropout(x, 0.25, 7), x)
assert issubclass(longattn.nn.Classifier, torch.nn.Module)
print("version", longattn.__version__, longattn.info()["torch"])
'''


def source_files():
    """The checkout as a clone has it: tracked files plus untracked ones git does not ignore."""
    out = subprocess.run(["git", "-C", ROOT, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         capture_output=True, check=True).stdout.decode()
    return [f for f in out.split("\0") if f and os.path.isfile(os.path.join(ROOT, f))]


def run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode:
        pytest.fail(f"{' '.join(map(str, cmd))} failed ({r.returncode}):\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}")
    return r.stdout


@pytest.mark.skipif(shutil.which("git") is None or not os.path.exists(os.path.join(ROOT, ".git")),
                    reason="needs a git checkout to copy")
def test_pip_install_into_fresh_venv(tmp_path):
    start = time.monotonic()
    src = tmp_path / "longattn-src"
    for f in source_files():
        os.makedirs(src / os.path.dirname(f), exist_ok=True)
        shutil.copy2(os.path.join(ROOT, f), src / f)
    assert not (src / "python" / "longattn" / "_lib").exists()

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    py = str(venv / "bin" / "python")
    shared = os.path.dirname(os.path.dirname(torch.__file__))  # site-packages holding torch and pip
    purelib = run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).strip()
    with open(os.path.join(purelib, "shared-env.pth"), "w") as f:
        f.write(f"import site; site.addsitedir({shared!r})\n")

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(CMAKE_BUILD_PARALLEL_LEVEL=os.environ.get("JOBS", "2"), OMP_WAIT_POLICY="passive",
               PIP_DISABLE_PIP_VERSION_CHECK="1", CCACHE_BASEDIR=str(src))
    if shutil.which("ccache"):
        env["CMAKE_CXX_COMPILER_LAUNCHER"] = "ccache"  # paths relative to CCACHE_BASEDIR: reruns hit
    build_dir = tmp_path / "build"
    pip = [py, "-m", "pip"]
    settings = [f"--config-settings=build-dir={build_dir}"]
    run(pip + ["install", "--no-build-isolation", "--no-index", *settings, str(src)], env=env)
    built = time.monotonic()

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    out = run([py, "-c", SMOKE, purelib], cwd=outside, env=env)
    assert out.count("ok ") == 10, out
    info = run([str(venv / "bin" / "longattn"), "info"], cwd=outside, env=env)
    assert "0.1.0" in info, info

    # The wheel: built from the same CMake folder, so only packaging is new work.
    wheels = tmp_path / "wheels"
    run(pip + ["wheel", "--no-build-isolation", "--no-index", "--no-deps", "-w", str(wheels), *settings, str(src)],
        env=env)
    (wheel,) = glob.glob(str(wheels / "longattn-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for want in ("longattn/__init__.py", "longattn/_lib/liblongattn_ops.so", "longattn/_bin/longattn",
                 "longattn/integrations/transformers.py", "longattn/nn/__init__.py", "longattn/_build_torch.txt"):
        assert want in names, (want, names)
    assert not [n for n in names if n.startswith(("include/", "lib/", "tests/")) or n.endswith(".a")], names
    ninja = (build_dir / "build.ninja").read_text()
    assert "-march=native" not in ninja  # the wheel runs on any x86-64, not only on this CPU
    print(f"pip install (build) {built - start:.0f} s, then smoke test and wheel {time.monotonic() - built:.0f} s")
