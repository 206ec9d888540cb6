#!/usr/bin/env bash
# The portable-speed figures of BENCHMARKS.md: the target cases, float32, 2 threads, run
# with the kernels held to one instruction-set level. LEVEL=avx2 also holds torch to AVX2 (ATen's
# kernels, MKL, oneDNN, OpenBLAS), so an AVX-512 machine measures both sides as an AVX2 CPU runs
# them. Usage: scripts/bench_isa.sh LEVEL [build] ; results under bench-results/isa-LEVEL/.
set -euo pipefail
level=${1:?usage: bench_isa.sh LEVEL [build]}
build=${2:-build}
out=${BENCH_OUT:-bench-results}/isa-$level
mkdir -p "$out"
export LONGATTN_ISA=$level
if [ "$level" = avx2 ]; then
  export ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 OPENBLAS_CORETYPE=Haswell
fi
run() {  # run NAME ARGS...
  local name=$1; shift
  echo "== $name ($level): longattn bench $*"
  "$build/longattn" bench --threads 2 --reps ${REPS:-3} --budget 10 "$@" --json "$out/$name.json" --md "$out/$name.md"
}
run softmax_fwd --suite softmax --n 1024,4096,16384 --causal 0 --rel-bias 0 --modes fwd
run softmax_4k --suite softmax --n 4096 --causal 0 --rel-bias 0,1 --modes fwd+bwd
run kernelized --suite kernelized --n 4096 --causal 0 --modes fwd+bwd
run toeplitz --suite toeplitz --n 4096 --modes fwd+bwd
run fastrpb --suite fastrpb --n 4096 --modes fwd+bwd
run yoso --suite yoso --n 4096 --modes fwd+bwd
run shatter --suite shatter_op --n 4096 --modes fwd+bwd
