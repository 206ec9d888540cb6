# The kernels call a single-threaded BLAS from inside their own OpenMP loops, so they
# link OpenBLAS's serial build (Debian: libopenblas-serial-dev) and never nest thread pools.
set(LONGATTN_OPENBLAS_DIR "/usr/lib/x86_64-linux-gnu/openblas-serial" CACHE PATH "Folder of the serial OpenBLAS")
find_library(LONGATTN_OPENBLAS_LIB NAMES openblas PATHS ${LONGATTN_OPENBLAS_DIR} NO_DEFAULT_PATH)
find_path(LONGATTN_CBLAS_INCLUDE NAMES cblas.h
  PATHS /usr/include/x86_64-linux-gnu/openblas-serial NO_DEFAULT_PATH)
if(NOT LONGATTN_OPENBLAS_LIB OR NOT LONGATTN_CBLAS_INCLUDE)
  message(FATAL_ERROR "Serial OpenBLAS not found: install Debian's libopenblas-serial-dev "
                      "(make does this) or set LONGATTN_OPENBLAS_DIR")
endif()
add_library(longattn_openblas INTERFACE)
target_link_libraries(longattn_openblas INTERFACE ${LONGATTN_OPENBLAS_LIB})
target_include_directories(longattn_openblas INTERFACE ${LONGATTN_CBLAS_INCLUDE})
