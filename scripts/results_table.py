"""A Markdown table of `longattn train` runs from their logs' summary lines (RESULTS.md).

    python scripts/results_table.py build/runs/listops-lra-*
"""
import os
import re
import sys

SUMMARY = re.compile(
    r"attention (?P<attn>\S+)(?: \+ FastRPB (?P<rpb>\S+))?: test accuracy (?P<test>[0-9.]+) \(loss (?P<loss>[0-9.]+)\), "
    r"val accuracy (?P<val>[0-9.]+) \(best (?P<best>[0-9.]+)\), (?P<params>\d+) parameters, wall (?P<wall>\S+), "
    r"(?P<tps>\d+) tokens/s, peak memory (?P<mem>\d+) MiB, (?P<threads>\d+) threads")


def main():
    print("| attention | FastRPB | test acc. | test loss | best val | wall | tokens/s | parameters | peak memory |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for run in sys.argv[1:]:
        log = os.path.join(run, "log.txt")
        if not os.path.exists(log):
            continue
        with open(log) as f:
            m = None
            for line in f:
                m = SUMMARY.search(line) or m
        if m is None:
            print(f"| {os.path.basename(run)} | | not finished | | | | | | |")
            continue
        g = m.groupdict()
        print(f"| {g['attn']} | {g['rpb'] or 'none'} | {100 * float(g['test']):.1f}% | {float(g['loss']):.3f} | "
              f"{100 * float(g['best']):.1f}% | {g['wall']} | {int(g['tps']):,} | {int(g['params']):,} | {g['mem']} MiB |")


if __name__ == "__main__":
    main()
