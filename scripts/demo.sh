#!/usr/bin/env bash
# The main job (`make demo`): what this build is, then three small transformers trained on
# Fashion-MNIST as 784-token pixel sequences (Debian's dataset-fashion-mnist), one per attention:
# exact softmax, SIKF linear attention, and SIKF + 2-D FastRPB. Each prints its progress and a
# summary; a table compares them at the end. About 2.5 minutes on an idle 2-core machine.
set -euo pipefail
build=${1:-build}
steps=${DEMO_STEPS:-1500}
out="$build/demo"
"$build/longattn" info --threads 2
echo

fmnist=/usr/share/datasets/fashion-mnist
if [ ! -f "$fmnist/train-images-idx3-ubyte.gz" ]; then
  echo "Fashion-MNIST is not installed; installing Debian's dataset-fashion-mnist (30 MB)..."
  SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo sudo)
  $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null ||
    { echo "could not install dataset-fashion-mnist; install it and run make demo again" >&2; exit 1; }
fi

echo "Task: Fashion-MNIST, 28x28 images as 784-token sequences (16 intensity levels), 10 classes (chance 10%)."
echo "Model: 1 layer, dim 32, 2 heads, FFN 64, mean pooling; AdamW lr 3e-3, batch 32, $steps steps ($((steps * 32)) images),"
echo "2 threads. Accuracy on the first 1,000 test images."
mkdir -p "$out"
rows=()
for spec in "softmax none" "sikf none" "sikf 2d"; do
  set -- $spec
  name="$1$([ "$2" = none ] || echo "+fastrpb-$2")"
  echo
  echo "== $1$([ "$2" = none ] || echo " + FastRPB $2")"
  "$build/longattn" train --task image --task-options "levels=16" --eval-limit 1000 \
    --attention "$1" --fastrpb "$2" --layers 1 --dim 32 --heads 2 --ffn 64 --dropout 0 \
    --steps "$steps" --batch 32 --lr 3e-3 --warmup 25 --eval-every 0 --log-every 50 --threads 2 \
    --out "$out/$name" 2>&1 | tee "$out/$name.log"
  # the summary is the last line of the log
  summary=$(tail -n 1 "$out/$name.log")
  acc=$(sed -n 's/.*test accuracy \([0-9.]*\).*/\1/p' <<<"$summary")
  tps=$(sed -n 's/.* \([0-9]*\) tokens\/s.*/\1/p' <<<"$summary")
  mem=$(sed -n 's/.*peak memory \([0-9]*\) MiB.*/\1/p' <<<"$summary")
  wall=$(sed -n 's/.*wall \([0-9hms]*\),.*/\1/p' <<<"$summary")
  params=$(sed -n 's/.*, \([0-9]*\) parameters.*/\1/p' <<<"$summary")
  [ -n "$acc" ] || { echo "training $name failed; see $out/$name.log" >&2; exit 1; }
  rows+=("$(printf '| %-22s | %8.1f%% | %10s | %6s | %8s | %7s MiB |' "$name" "$(awk "BEGIN{print 100*$acc}")" "$tps" "$wall" "$params" "$mem")")
done
echo
echo "| attention              | test acc. |   tokens/s |   wall | params   | peak mem    |"
echo "|------------------------|-----------|------------|--------|----------|-------------|"
printf '%s\n' "${rows[@]}"
echo "(tokens/s: non-padding tokens per second of training steps; peak memory: the process's peak"
echo " resident set, the 60,000 training images included; logs and checkpoints in $out/)"
