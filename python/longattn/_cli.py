"""The `longattn` command of a pip-installed package: runs the bundled C++ tool.

The tool is a native program (bench, data, train, eval, info) installed inside the package at
longattn/_bin/longattn; this entry point replaces the Python process with it, so its exit status,
signals and output are the tool's own. In a source checkout the tool is build/longattn instead.
"""
import importlib.util
import os
import sys

_TOOL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_bin", "longattn")


def main():
    if not os.path.exists(_TOOL):
        sys.exit(f"longattn: the command-line tool {_TOOL} is not installed; a source checkout "
                 "has it at build/longattn after `make build`")
    # The tool's RPATH finds torch next to longattn in site-packages; torch can also live in another
    # site folder of this interpreter (--system-site-packages, a .pth): point the loader at the torch
    # that Python would import, located without importing it.
    env = dict(os.environ)
    spec = importlib.util.find_spec("torch")
    if spec is not None and spec.submodule_search_locations:
        torch_lib = os.path.join(list(spec.submodule_search_locations)[0], "lib")
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (torch_lib, env.get("LD_LIBRARY_PATH")) if p)
    os.execve(_TOOL, [_TOOL] + sys.argv[1:], env)
