"""Prefill of a small Llama-style model on the CPU: attn_implementation longattn vs sdpa vs eager.

    .venv/bin/python scripts/bench_hf_prefill.py --n 4096,16384 --threads 2 --repeats 3

A randomly initialised LlamaForCausalLM (no download), batch 1, one forward pass over N tokens
(no_grad, the KV cache filled as generate() does, logits of the last token only), timed as the
median of --repeats runs after a short warm-up (256 tokens), per implementation, side by side in one process.
Prints a Markdown table (and --json) with the machine, the ISA of longattn's kernels, the thread
count and the load average before and after, since a shared machine inflates every figure.
"""
import argparse
import json
import os
import platform
import statistics
import time

import torch
import transformers

import longattn
import longattn.integrations.transformers as lt


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", default="4096,16384", help="prompt lengths, comma-separated")
    ap.add_argument("--impls", default="longattn,sdpa,eager")
    ap.add_argument("--eager-max-n", type=int, default=16384,
                    help="longest N for eager (it holds H x N x N float32 weights per layer)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    lt.register()
    lengths = [int(x) for x in args.n.split(",")]
    impls = args.impls.split(",")

    cfg = transformers.LlamaConfig(vocab_size=1024, hidden_size=args.hidden, intermediate_size=4 * args.hidden,
                                   num_hidden_layers=args.layers, num_attention_heads=args.heads,
                                   num_key_value_heads=args.kv_heads, max_position_embeddings=max(lengths))
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa").eval()
    params = sum(p.numel() for p in model.parameters())
    load_before = os.getloadavg()
    header = (f"machine: {cpu_model()}, {os.cpu_count()} cores; longattn kernels: {longattn.info()['kernels']}; "
              f"torch {torch.__version__}, transformers {transformers.__version__}; threads {args.threads}; "
              f"model: Llama-style, {args.layers} layers, hidden {args.hidden}, {args.heads} heads "
              f"({args.kv_heads} key/value heads), head dim {args.hidden // args.heads}, {params / 1e6:.1f}M parameters, "
              f"float32, batch 1; load average before {load_before[0]:.1f}")
    print(header, flush=True)
    results = []
    for n in lengths:
        ids = torch.randint(0, cfg.vocab_size, (1, n), generator=torch.Generator().manual_seed(n))
        last = {}
        for impl in impls:
            if impl == "eager" and n > args.eager_max_n:
                continue
            model.set_attn_implementation(impl)
            times = []
            with torch.no_grad():
                model(input_ids=ids[:, :256], use_cache=True, logits_to_keep=1)  # warm-up: threads, allocator
                cpu0 = time.process_time()
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
                    times.append(time.perf_counter() - t0)
                cpu = (time.process_time() - cpu0) / args.repeats  # all threads: not inflated by other jobs
            last[impl] = out.logits[0, -1]
            r = dict(n=n, impl=impl, median_s=statistics.median(times), runs_s=times, cpu_s_per_run=cpu)
            results.append(r)
            print(f"N={n:6d} {impl:9s} median {r['median_s']:.3f} s  runs {', '.join(f'{t:.3f}' for t in times)}"
                  f"  CPU {cpu:.2f} s/run", flush=True)
        if "sdpa" in last:
            for impl, v in last.items():
                diff = (v - last["sdpa"]).abs().max().item()
                print(f"N={n:6d} {impl:9s} last-token logits vs sdpa: max |diff| {diff:.2e}", flush=True)
    load_after = os.getloadavg()
    print(f"load average after {load_after[0]:.1f}\n")
    print("| N | " + " | ".join(f"{i} s (CPU s)" for i in impls) + " | sdpa / longattn | eager / longattn |")
    print("|---:|" + "---:|" * (len(impls) + 2))
    for n in lengths:
        t = {r["impl"]: r for r in results if r["n"] == n}
        cells = [f"{t[i]['median_s']:.2f} ({t[i]['cpu_s_per_run']:.2f})" if i in t else "-" for i in impls]
        ratio = [f"{t[i]['median_s'] / t['longattn']['median_s']:.1f}x" if i in t and "longattn" in t else "-"
                 for i in ("sdpa", "eager")]
        print(f"| {n} | " + " | ".join(cells + ratio) + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(header=header, load_before=load_before, load_after=load_after, results=results), f, indent=1)


if __name__ == "__main__":
    main()
