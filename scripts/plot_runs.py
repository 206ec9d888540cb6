"""Learning curves of `longattn train` runs (their metrics.jsonl) as one PNG: training loss
(moving average) and validation accuracy against the step, one line per run.

    python scripts/plot_runs.py build/runs/listops-lra-* --out docs/results/listops_lra.png
"""
import argparse
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read(path):
    train, val, test = [], [], None
    with open(os.path.join(path, "metrics.jsonl")) as f:
        for line in f:
            r = json.loads(line)
            if r["split"] == "train":
                train.append((r["step"], r["loss"]))
            elif r["split"] == "val":
                val.append((r["step"], r["accuracy"]))
            elif r["split"] == "test":
                test = r["accuracy"]
    return train, val, test


def moving_average(xs, window):
    out, s = [], 0.0
    for i, x in enumerate(xs):
        s += x
        if i >= window:
            s -= xs[i - window]
        out.append(s / min(i + 1, window))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+", help="run folders (each with metrics.jsonl)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--window", type=int, default=50, help="moving-average window of the loss")
    ap.add_argument("--title", default="")
    ap.add_argument("--chance", type=float, default=None, help="draw this accuracy as a dashed line")
    args = ap.parse_args()
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(12, 4.5))
    for path in args.runs:
        if not os.path.exists(os.path.join(path, "metrics.jsonl")):
            continue
        train, val, test = read(path)
        name = os.path.basename(os.path.normpath(path))
        label = name + (f" (test {100 * test:.1f}%)" if test is not None else "")
        if train:
            steps, losses = zip(*train)
            ax_loss.plot(steps, moving_average(list(losses), args.window), label=label)
        if val:
            steps, accs = zip(*val)
            ax_acc.plot(steps, [100 * a for a in accs], marker="o", label=label)
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel(f"training loss ({args.window}-step moving average)")
    ax_acc.set_xlabel("step")
    ax_acc.set_ylabel("validation accuracy (%)")
    if args.chance is not None:
        ax_acc.axhline(100 * args.chance, linestyle="--", color="gray", label="majority class")
    ax_acc.legend(fontsize=7)
    ax_loss.grid(alpha=0.3)
    ax_acc.grid(alpha=0.3)
    if args.title:
        fig.suptitle(args.title)
    fig.tight_layout()
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
