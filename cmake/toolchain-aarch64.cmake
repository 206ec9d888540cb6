# Cross-compiles the kernels and their tests for aarch64 Linux with Debian's cross compiler
# (g++-aarch64-linux-gnu); the tests run under qemu-user (qemu-user-static). Torch, the apps and
# the data library are not built (LONGATTN_KERNELS_ONLY), and without an aarch64 OpenBLAS the
# kernels use the built-in GEMM (cmake/openblas.cmake). Usage:
#   cmake -S . -B build-aarch64 -DCMAKE_TOOLCHAIN_FILE=cmake/toolchain-aarch64.cmake
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(LONGATTN_CROSS_TRIPLE aarch64-linux-gnu)

set(CMAKE_CXX_COMPILER ${LONGATTN_CROSS_TRIPLE}-g++)
set(CMAKE_C_COMPILER ${LONGATTN_CROSS_TRIPLE}-gcc)
# The binutils of the target: the per-level relocatable link and objcopy localisation
# (kernels/CMakeLists.txt) must read aarch64 objects.
set(CMAKE_OBJCOPY ${LONGATTN_CROSS_TRIPLE}-objcopy CACHE FILEPATH "")
set(CMAKE_OBJDUMP ${LONGATTN_CROSS_TRIPLE}-objdump CACHE FILEPATH "")
set(CMAKE_AR ${LONGATTN_CROSS_TRIPLE}-ar CACHE FILEPATH "")
set(CMAKE_RANLIB ${LONGATTN_CROSS_TRIPLE}-ranlib CACHE FILEPATH "")

# Libraries and headers of the target only; programs (ninja, sh) of the host.
set(CMAKE_FIND_ROOT_PATH /usr/${LONGATTN_CROSS_TRIPLE})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

# CTest runs the test binaries through qemu-user; -L points it at the target's loader and libs.
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64-static -L /usr/${LONGATTN_CROSS_TRIPLE})

# The torch operators need a torch built for the target; the kernels stand alone.
set(LONGATTN_KERNELS_ONLY ON CACHE BOOL "")
