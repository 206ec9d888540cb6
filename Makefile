# The two commands of the README: `make demo` (the main job) and `make test` (every test).
# Both install what is missing (scripts/setup_env.sh), configure and build incrementally.
SHELL := /bin/bash
BUILD ?= build
ASAN_BUILD ?= build-asan
# The aarch64 cross build (kernels and their tests, run under qemu-user), made when the cross
# compiler and qemu are there (scripts/setup_env.sh installs them).
ARM_BUILD ?= build-aarch64
HAVE_ARM_CROSS = $(shell command -v aarch64-linux-gnu-g++ >/dev/null 2>&1 && command -v qemu-aarch64-static >/dev/null 2>&1 && echo yes)
JOBS ?= 2
PY := .venv/bin/python
CCACHE := $(shell command -v ccache 2>/dev/null)
LAUNCHER := $(if $(CCACHE),-DCMAKE_CXX_COMPILER_LAUNCHER=$(CCACHE),)
export CCACHE_BASEDIR := $(CURDIR)

.PHONY: all setup build build-asan build-aarch64 test fuzz fuzz-kernels demo bench clean

all: build

setup:
	@bash scripts/setup_env.sh

$(BUILD)/build.ninja: | setup
	cmake -S . -B $(BUILD) -G Ninja $(LAUNCHER) \
	  -DCMAKE_PREFIX_PATH="$$($(PY) -c 'import torch; print(torch.utils.cmake_prefix_path)')"

build: setup $(BUILD)/build.ninja
	cmake --build $(BUILD) -j $(JOBS)

$(ASAN_BUILD)/build.ninja: | setup
	cmake -S . -B $(ASAN_BUILD) -G Ninja $(LAUNCHER) -DLONGATTN_WITH_TORCH=OFF \
	  -DLONGATTN_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo

build-asan: setup $(ASAN_BUILD)/build.ninja
	cmake --build $(ASAN_BUILD) -j $(JOBS)

$(ARM_BUILD)/build.ninja: | setup
	cmake -S . -B $(ARM_BUILD) -G Ninja $(LAUNCHER) -DCMAKE_TOOLCHAIN_FILE=cmake/toolchain-aarch64.cmake

build-aarch64: setup
	@if [ "$(HAVE_ARM_CROSS)" = yes ]; then \
	  $(MAKE) --no-print-directory $(ARM_BUILD)/build.ninja && cmake --build $(ARM_BUILD) -j $(JOBS); \
	else echo "aarch64 cross tools (g++-aarch64-linux-gnu, qemu-user-static) not found: no aarch64 build"; fi

test: build build-asan build-aarch64
	@$(PY) scripts/run_tests.py --build $(BUILD) --asan-build $(ASAN_BUILD) --aarch64-build $(ARM_BUILD)

# Long property-based runs: every operator (tests/python/test_properties.py) and the tool's flags
# (tests/python/test_cli.py) under the random "fuzz" profile: FUZZ_EXAMPLES examples per operator
# test, FUZZ_CLI_EXAMPLES tool runs.
FUZZ_EXAMPLES ?= 3000
FUZZ_CLI_EXAMPLES ?= 300
fuzz: build
	HYPOTHESIS_PROFILE=fuzz FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) FUZZ_CLI_EXAMPLES=$(FUZZ_CLI_EXAMPLES) PYTHONPATH=python OMP_WAIT_POLICY=passive \
	  $(PY) -m pytest -q tests/python/test_properties.py tests/python/test_cli.py -k "property or fuzz" \
	  --hypothesis-show-statistics

# Long fuzz runs of the kernels (tests/kernels/fuzz, docs/fuzzing.md) under ASan/UBSan: the
# seeded driver, FUZZ_KERNEL_ITERATIONS cases of FUZZ_KERNEL_SEED on every level this CPU runs;
# then, where clang++ links libFuzzer, FUZZ_KERNEL_SECONDS of coverage-guided fuzzing of the best
# level in the clang build LIBFUZZER_BUILD (its corpus kept in LIBFUZZER_BUILD/corpus).
FUZZ_KERNEL_ITERATIONS ?= 50000
FUZZ_KERNEL_SEED ?= 1
FUZZ_KERNEL_SECONDS ?= 300
LIBFUZZER_BUILD ?= build-libfuzzer
CLANGXX := $(shell command -v clang++ 2>/dev/null)
HAVE_LIBFUZZER = $(shell [ -n "$(CLANGXX)" ] && printf 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }' | \
  $(CLANGXX) -fsanitize=fuzzer -x c++ - -o /dev/null >/dev/null 2>&1 && echo yes)
fuzz-kernels: build-asan
	@set -e; for level in portable neon avx2 avx512; do \
	  exe=$(ASAN_BUILD)/tests/kernels/fuzz/longattn_kernel_fuzz_$$level; \
	  [ -x $$exe ] && $(ASAN_BUILD)/tests/kernels/longattn_isa_probe $$level >/dev/null || continue; \
	  echo "== $$level: $(FUZZ_KERNEL_ITERATIONS) cases, seed $(FUZZ_KERNEL_SEED)"; \
	  OMP_WAIT_POLICY=passive $$exe --iterations $(FUZZ_KERNEL_ITERATIONS) --seed $(FUZZ_KERNEL_SEED); \
	done
	@if [ "$(HAVE_LIBFUZZER)" = yes ]; then \
	  set -e; \
	  [ -f $(LIBFUZZER_BUILD)/build.ninja ] || CXX=$(CLANGXX) cmake -S . -B $(LIBFUZZER_BUILD) -G Ninja $(LAUNCHER) \
	    -DLONGATTN_KERNELS_ONLY=ON -DLONGATTN_SANITIZE=ON -DLONGATTN_LIBFUZZER=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo; \
	  for level in avx512 avx2 neon portable; do \
	    $(ASAN_BUILD)/tests/kernels/longattn_isa_probe $$level >/dev/null && break; \
	  done; \
	  cmake --build $(LIBFUZZER_BUILD) -j $(JOBS) --target longattn_kernel_libfuzzer_$$level; \
	  mkdir -p $(LIBFUZZER_BUILD)/corpus; \
	  echo "== libFuzzer, $$level, $(FUZZ_KERNEL_SECONDS) s"; \
	  OMP_WAIT_POLICY=passive $(LIBFUZZER_BUILD)/tests/kernels/fuzz/longattn_kernel_libfuzzer_$$level \
	    -max_total_time=$(FUZZ_KERNEL_SECONDS) -max_len=256 -len_control=0 -print_final_stats=1 \
	    -artifact_prefix=$(LIBFUZZER_BUILD)/ $(LIBFUZZER_BUILD)/corpus; \
	else echo "clang++ with libFuzzer not found: no coverage-guided run (the seeded runs above are the fuzzing)"; fi

demo: build
	@bash scripts/demo.sh $(BUILD)

bench: build
	@bash scripts/bench_all.sh $(BUILD)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(ARM_BUILD) python/longattn/_lib
