#!/usr/bin/env bash
# The full benchmark behind BENCHMARKS.md: every suite at its default grid, 2 threads,
# JSON + Markdown under bench-results/, then PNG charts. Slow (tens of minutes); not a test.
set -euo pipefail
build=${1:-build}
out=bench-results
mkdir -p "$out"
suites=$("$build/longattn" bench --list | grep -v '^ ' | cut -d: -f1)
for s in $suites; do
  "$build/longattn" bench --suite "$s" --threads 2 --reps 5 --json "$out/$s.json" --md "$out/$s.md"
done
.venv/bin/python scripts/plot_bench.py "$out"/*.json --out "$out"
