"""The `longattn` command of a pip-installed package: runs the bundled C++ tool.

The tool is a native program (bench, data, train, eval, info) installed inside the package at
longattn/_bin/longattn; this entry point replaces the Python process with it, so its exit status,
signals and output are the tool's own. In a source checkout the tool is build/longattn instead.
"""
import os
import sys

_TOOL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_bin", "longattn")


def main():
    if not os.path.exists(_TOOL):
        sys.exit(f"longattn: the command-line tool {_TOOL} is not installed; a source checkout "
                 "has it at build/longattn after `make build`")
    os.execv(_TOOL, [_TOOL] + sys.argv[1:])
