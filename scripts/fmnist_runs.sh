#!/usr/bin/env bash
# Fashion-MNIST as 784-token pixel sequences with and without 2-D FastRPB: the longer runs behind
# RESULTS.md (the demo's model, one run per ATTN:FASTRPB:STEPS, full 10,000-image test set).
#   scripts/fmnist_runs.sh sikf:none:1875 sikf:2d:1875 ...
# THREADS (1) and OUT (build/runs) may be set in the environment. Not part of `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${THREADS:-1}
OUT=${OUT:-build/runs}
for cfg in "$@"; do
  IFS=: read -r attn rpb steps <<<"$cfg"
  name=fmnist-$attn-$rpb-$steps
  mkdir -p "$OUT/$name"
  build/longattn train --task image --task-options "levels=16" \
    --attention "$attn" --fastrpb "$rpb" --layers 1 --dim 32 --heads 2 --ffn 64 --dropout 0 \
    --steps "$steps" --batch 32 --lr 3e-3 --warmup 100 --eval-every 625 --log-every 125 \
    --threads "$THREADS" --out "$OUT/$name" 2>&1 | tee "$OUT/$name/log.txt"
done
