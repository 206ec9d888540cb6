"""`cmake --install` gives a package that a C++ project finds with find_package(longattn)."""
import os
import subprocess

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.join(ROOT, "build")


@pytest.mark.skipif(not os.path.exists(os.path.join(BUILD, "build.ninja")), reason="no build/ to install from")
def test_find_package_after_install(tmp_path):
    prefix = tmp_path / "prefix"
    subprocess.run(["cmake", "--install", BUILD, "--prefix", str(prefix)], check=True, capture_output=True)
    consumer = tmp_path / "consumer"
    env = dict(os.environ)
    if subprocess.run(["which", "ccache"], capture_output=True).returncode == 0:
        env["CMAKE_CXX_COMPILER_LAUNCHER"] = "ccache"  # repeated runs compile nothing
    subprocess.run(["cmake", "-S", os.path.join(ROOT, "tests", "install"), "-B", str(consumer), "-G", "Ninja",
                    f"-DCMAKE_PREFIX_PATH={prefix};{torch.utils.cmake_prefix_path}"],
                   check=True, capture_output=True, env=env)
    subprocess.run(["cmake", "--build", str(consumer)], check=True, capture_output=True, env=env)
    out = subprocess.run([str(consumer / "app")], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "ok [1, 2, 16, 8]"
