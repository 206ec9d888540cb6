# BLAS for the kernels' GEMMs (kernels/common/blas.cpp): OpenBLAS, or the built-in blocked GEMM.
#
# The kernels call BLAS from inside their own OpenMP loops, one thread per call. Debian's serial
# OpenBLAS 0.3.21 is not safe to call from several threads at once (its buffer pool is unlocked:
# wrong GEMM results), and the OpenMP build's openblas_set_num_threads() changes the process's
# OpenMP thread count; so we link the pthread build (Debian: libopenblas-pthread-dev), set to one
# thread per call (kernels/common/blas.cpp), which is reentrant and leaves OpenMP alone.
#
# LONGATTN_BLAS=auto takes OpenBLAS where it is found and, only when cross-compiling or on a
# target other than x86-64 (where no OpenBLAS of the target may be installed), falls back to the
# built-in GEMM: correct and cache-blocked, but several times slower than OpenBLAS, so an x86-64
# build without OpenBLAS stops rather than silently losing speed.
set(LONGATTN_BLAS "auto" CACHE STRING "BLAS for the kernels: auto, openblas or builtin")
set_property(CACHE LONGATTN_BLAS PROPERTY STRINGS auto openblas builtin)
if(NOT LONGATTN_BLAS MATCHES "^(auto|openblas|builtin)$")
  message(FATAL_ERROR "LONGATTN_BLAS: expected auto, openblas or builtin, got '${LONGATTN_BLAS}'")
endif()

set(_longattn_multiarch ${CMAKE_LIBRARY_ARCHITECTURE})
if(NOT _longattn_multiarch)
  set(_longattn_multiarch x86_64-linux-gnu)
endif()
if(NOT LONGATTN_BLAS STREQUAL "builtin")
  set(LONGATTN_OPENBLAS_PTHREAD_DIR "/usr/lib/${_longattn_multiarch}/openblas-pthread" CACHE PATH "Folder of OpenBLAS (pthread build)")
  find_library(LONGATTN_OPENBLAS_PTHREAD_LIB NAMES openblas PATHS ${LONGATTN_OPENBLAS_PTHREAD_DIR} NO_DEFAULT_PATH)
  find_path(LONGATTN_OPENBLAS_PTHREAD_INCLUDE NAMES cblas.h
    PATHS /usr/include/${_longattn_multiarch}/openblas-pthread NO_DEFAULT_PATH)
endif()

set(_longattn_have_openblas FALSE)
if(LONGATTN_OPENBLAS_PTHREAD_LIB AND LONGATTN_OPENBLAS_PTHREAD_INCLUDE)
  set(_longattn_have_openblas TRUE)
endif()
set(LONGATTN_BLAS_IN_USE openblas)
if(LONGATTN_BLAS STREQUAL "builtin")
  set(LONGATTN_BLAS_IN_USE builtin)
elseif(NOT _longattn_have_openblas)
  if(LONGATTN_BLAS STREQUAL "auto" AND
     (CMAKE_CROSSCOMPILING OR NOT CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64)$"))
    set(LONGATTN_BLAS_IN_USE builtin)
    message(STATUS "OpenBLAS (pthread build) not found for ${CMAKE_SYSTEM_PROCESSOR}: "
                   "the kernels use the built-in blocked GEMM")
  else()
    message(FATAL_ERROR "OpenBLAS (pthread build) not found: install Debian's libopenblas-pthread-dev "
                        "(make does this), set LONGATTN_OPENBLAS_PTHREAD_DIR, or take the slower "
                        "built-in GEMM with -DLONGATTN_BLAS=builtin")
  endif()
endif()

add_library(longattn_openblas INTERFACE)
if(LONGATTN_BLAS_IN_USE STREQUAL "openblas")
  target_link_libraries(longattn_openblas INTERFACE ${LONGATTN_OPENBLAS_PTHREAD_LIB})
  target_include_directories(longattn_openblas INTERFACE ${LONGATTN_OPENBLAS_PTHREAD_INCLUDE})
else()
  # Defined only here, so the usual OpenBLAS build's compile lines (and ccache) stay as they were.
  target_compile_definitions(longattn_openblas INTERFACE LONGATTN_BUILTIN_BLAS)
endif()
