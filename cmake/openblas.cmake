# The kernels call BLAS from inside their own OpenMP loops, one thread per call. Debian's serial
# OpenBLAS 0.3.21 is not safe to call from several threads at once (its buffer pool is unlocked:
# wrong GEMM results), and the OpenMP build's openblas_set_num_threads() changes the process's
# OpenMP thread count; so we link the pthread build (Debian: libopenblas-pthread-dev), set to one
# thread per call (kernels/common/blas.cpp), which is reentrant and leaves OpenMP alone.
set(LONGATTN_OPENBLAS_PTHREAD_DIR "/usr/lib/x86_64-linux-gnu/openblas-pthread" CACHE PATH "Folder of OpenBLAS (pthread build)")
find_library(LONGATTN_OPENBLAS_PTHREAD_LIB NAMES openblas PATHS ${LONGATTN_OPENBLAS_PTHREAD_DIR} NO_DEFAULT_PATH)
find_path(LONGATTN_OPENBLAS_PTHREAD_INCLUDE NAMES cblas.h
  PATHS /usr/include/x86_64-linux-gnu/openblas-pthread NO_DEFAULT_PATH)
if(NOT LONGATTN_OPENBLAS_PTHREAD_LIB OR NOT LONGATTN_OPENBLAS_PTHREAD_INCLUDE)
  message(FATAL_ERROR "OpenBLAS (pthread build) not found: install Debian's libopenblas-pthread-dev "
                      "(make does this) or set LONGATTN_OPENBLAS_PTHREAD_DIR")
endif()
add_library(longattn_openblas INTERFACE)
target_link_libraries(longattn_openblas INTERFACE ${LONGATTN_OPENBLAS_PTHREAD_LIB})
target_include_directories(longattn_openblas INTERFACE ${LONGATTN_OPENBLAS_PTHREAD_INCLUDE})
