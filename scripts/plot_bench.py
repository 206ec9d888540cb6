"""Turns `longattn bench --json` files into PNG charts: time and peak memory against N, log-log,
one chart per (suite, mode, causal, bias) with one line per operator."""
import argparse
import collections
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("files", nargs="+")
    ap.add_argument("--out", default="bench-results")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for path in args.files:
        with open(path) as f:
            doc = json.load(f)
        groups = collections.defaultdict(lambda: collections.defaultdict(list))
        for r in doc["records"]:
            if r["skipped"] or r["time_s"] is None:
                continue
            extra = {k: v for k, v in r.items() if k not in {
                "suite", "op", "baseline", "mode", "B", "H", "N", "D", "causal", "rel_bias", "dtype",
                "time_s", "cpu_s", "gflops_per_core_cpu", "gflops", "frac_sgemm", "peak_bytes", "beyond_outputs_bytes", "times", "skipped"}}
            key = (r["suite"], r["mode"], r["causal"], r["rel_bias"], r["B"], r["H"], r["D"],
                   tuple(sorted(extra.items())))
            groups[key][r["op"] + (" (baseline)" if r["baseline"] else "")].append(r)
        for key, ops in groups.items():
            suite, mode, causal, bias, B, H, D, extra = key
            fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4.2))
            for op, rs in ops.items():
                rs.sort(key=lambda r: r["N"])
                ns = [r["N"] for r in rs]
                ax_t.plot(ns, [r["time_s"] * 1e3 for r in rs], marker="o", label=op)
                ax_m.plot(ns, [max(r["peak_bytes"], 1) / 2**20 for r in rs], marker="o", label=op)
            for ax, label in ((ax_t, "time (ms, median)"), (ax_m, "peak memory (MiB)")):
                ax.set_xscale("log", base=2)
                ax.set_yscale("log")
                ax.set_xlabel("sequence length N")
                ax.set_ylabel(label)
                ax.grid(True, which="both", alpha=0.3)
            ax_t.legend(fontsize=7)
            title = f"{suite} {mode}, B={B} H={H} D={D}" + (" causal" if causal else "") + \
                (" rel_bias" if bias else "") + "".join(f" {k}={v}" for k, v in extra)
            fig.suptitle(f"{title}\n{doc['machine']}, {doc['threads']} threads, torch {doc['torch']}",
                         fontsize=9)
            fig.tight_layout()
            name = f"{suite}_{mode.replace('+', '')}{'_causal' if causal else ''}{'_bias' if bias else ''}" + \
                "".join(f"_{k}{v:g}" if isinstance(v, (int, float)) else f"_{k}{v}" for k, v in extra) + ".png"
            fig.savefig(os.path.join(args.out, name), dpi=110)
            plt.close(fig)
            print("wrote", os.path.join(args.out, name))


if __name__ == "__main__":
    main()
