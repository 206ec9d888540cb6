#!/usr/bin/env bash
# The benchmark runs behind BENCHMARKS.md (`make bench`): every suite, float32, 2 threads, JSON and
# Markdown under bench-results/, then PNG charts. Slow (about an hour on 2 idle cores); not a test.
# Cases that would take many minutes per run (exact attention at N >= 65536) are limited to the
# runs the targets need.
set -euo pipefail
build=${1:-build}
out=${BENCH_OUT:-bench-results}
mkdir -p "$out"
run() {  # run NAME ARGS...: one invocation, its JSON and Markdown named NAME
  local name=$1; shift
  echo "== $name: longattn bench $*"
  "$build/longattn" bench --threads 2 --reps 3 --budget 15 "$@" --json "$out/$name.json" --md "$out/$name.md"
}
suite=${BENCH_SUITES:-softmax kernelized shatter toeplitz yoso}
for s in $suite; do
  case $s in
    softmax)
      run softmax --suite softmax
      run softmax_64k --suite softmax --cases longattn --n 65536 --causal 0 --rel-bias 1 --modes fwd+bwd --reps 1 ;;
    kernelized)
      run kernelized --suite kernelized --n 1024,4096,16384
      run kernelized_long --suite kernelized --cases longattn.kernelized --n 65536,262144 ;;
    shatter)
      run shatter_layer --suite shatter_layer
      run shatter_op --suite shatter_op ;;
    toeplitz)
      run toeplitz --suite toeplitz
      run fastrpb --suite fastrpb
      run luo --suite luo --n 1024,4096,16384
      run luo_64k --suite luo --cases longattn.kernelized_rpe --n 65536 --modes fwd+bwd --reps 1 ;;
    yoso)
      run yoso --suite yoso --n 1024,4096,16384
      run yoso_64k --suite yoso --cases longattn.yoso_attention --n 65536 ;;
  esac
done
.venv/bin/python scripts/plot_bench.py "$out"/*.json --out "$out"
