#!/bin/sh
# Checks that the kernel library holds no instruction above the architecture's baseline outside
# the objects of the dispatched levels (x86-64: any AVX instruction, VEX or EVEX encoded, starts
# with "v"), and, so the check itself is known to see such instructions, that the avx2 and
# avx512 objects do use them.  Usage: check_baseline.sh libkernels.a LEVEL...
set -eu
lib=$1; shift
objdump=${OBJDUMP:-objdump}
# The target's architecture (a cross build checks its own objects), else the host's.
case "${TARGET_ARCH:-$(uname -m)}" in x86_64|AMD64|amd64) ;; *) echo "not x86-64: nothing to check"; exit 0 ;; esac
dir=$(mktemp -d); trap 'rm -rf "$dir"' EXIT
cd "$dir" && ar x "$lib"
status=0
for obj in *.o; do
  # mnemonics of every instruction (third tab-separated field of objdump -d)
  n=$("$objdump" -d --no-show-raw-insn "$obj" | awk -F'\t' 'NF >= 2 {split($2, w, " "); print w[1]}' |
      grep -c '^v' || true)
  case "$obj" in
    longattn_kernels_avx2.o|longattn_kernels_avx512.o)
      if [ "$n" -eq 0 ]; then echo "FAIL: $obj has no AVX instruction (is it compiled for its level?)"; status=1
      else echo "ok: $obj ($n AVX instructions, dispatched)"; fi ;;
    *)
      if [ "$n" -ne 0 ]; then echo "FAIL: $obj (baseline) has $n AVX instructions"; status=1
      else echo "ok: $obj (baseline)"; fi ;;
  esac
done
exit $status
