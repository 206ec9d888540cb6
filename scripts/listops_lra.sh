#!/usr/bin/env bash
# ListOps at LRA's lengths (501..1999 tokens) with the PyTorch-LRA model size, one run per
# attention given as ATTN:FASTRPB; the runs behind RESULTS.md. Not part of `make test` (hours).
#   scripts/listops_lra.sh softmax:none sikf:1d ...
# TAG (a suffix for the run's folder), STEPS (1000), LR (1e-3), WARMUP (100), SEED (0), THREADS (1), BUCKET (16), OUT (build/runs) may
# be set in the environment; PyTorch-LRA's published schedule is STEPS=5000 LR=1e-4 WARMUP=1000.
# CLIP (1), WD (0.01) and EMBED_STD (1) are the trainer's defaults; PyTorch-LRA's code uses no clipping, no weight
# decay and a 0.02 token-embedding init: CLIP=0 WD=0 EMBED_STD=0.02.
# LONGATTN (build/longattn) names the tool, e.g. a frozen copy while the build changes.
# RESUME=1 continues an interrupted run from its folder's latest checkpoint (exact).
set -euo pipefail
cd "$(dirname "$0")/.."
LONGATTN=${LONGATTN:-build/longattn}
STEPS=${STEPS:-1000}
LR=${LR:-1e-3}
WARMUP=${WARMUP:-100}
SEED=${SEED:-0}
RESUME=${RESUME:-0}
THREADS=${THREADS:-1}
BUCKET=${BUCKET:-16}
CLIP=${CLIP:-1}
WD=${WD:-0.01}
EMBED_STD=${EMBED_STD:-1}
OUT=${OUT:-build/runs}
DATA=$OUT/listops-lra
if [ ! -f "$DATA/test.tsv" ]; then
  "$LONGATTN" data --task listops \
    --task-options "n_train=96000 n_val=2000 n_test=2000 min_length=500 max_length=2000 seed=0" --out "$DATA"
fi
for cfg in "$@"; do
  attn=${cfg%%:*}
  rpb=${cfg##*:}
  name=listops-lra-$attn-$rpb${TAG:-}
  mkdir -p "$OUT/$name"
  "$LONGATTN" train --task files --task-options "dir=$DATA" --attention "$attn" --fastrpb "$rpb" \
    --layers 2 --dim 64 --heads 2 --ffn 128 --dropout 0.1 --positions learned --pooling mean --embed-std "$EMBED_STD" --clip "$CLIP" --weight-decay "$WD" \
    --steps "$STEPS" --batch 32 --bucket "$BUCKET" --lr "$LR" --warmup "$WARMUP" \
    --seed "$SEED" $([ "$RESUME" = 1 ] && echo --resume) \
    --eval-every 250 --log-every 50 --threads "$THREADS" --out "$OUT/$name" 2>&1 | tee -a "$OUT/$name/log.txt"
done
