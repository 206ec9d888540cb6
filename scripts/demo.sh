#!/usr/bin/env bash
# The main job (`make demo`): what this build is, then exact attention against torch's fused
# SDPA and the composite a PyTorch user writes, at a few lengths.
set -euo pipefail
build=${1:-build}
"$build/longattn" info --threads 2
echo
"$build/longattn" bench --suite softmax --threads 2 --n 1024,4096 --causal 0 --rel-bias 0,1 \
  --reps 3 --budget 10 --md "$build/demo-bench.md" | sed -n '/^Machine:/,$p'
