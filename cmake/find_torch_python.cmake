# Under `pip install` (SKBUILD), torch is the one of the Python environment that runs the build:
# ask that interpreter where torch's CMake files are, unless the caller already said so.
# Why this and not a torch build requirement: see pyproject.toml (no build isolation).
if(NOT SKBUILD)
  return()
endif()
execute_process(
  COMMAND "${Python_EXECUTABLE}" -c "import torch; print(torch.utils.cmake_prefix_path); print(torch.__version__)"
  OUTPUT_VARIABLE _longattn_torch_out ERROR_VARIABLE _longattn_torch_err RESULT_VARIABLE _longattn_torch_rc
  OUTPUT_STRIP_TRAILING_WHITESPACE)
if(NOT _longattn_torch_rc EQUAL 0)
  message(FATAL_ERROR
    "longattn builds against the torch of the Python environment it is installed into, but "
    "'${Python_EXECUTABLE}' cannot import torch (${_longattn_torch_err}). Install torch first, "
    "then install longattn without build isolation: pip install scikit-build-core && "
    "pip install --no-build-isolation <path or URL of longattn>")
endif()
string(REPLACE "\n" ";" _longattn_torch_out "${_longattn_torch_out}")
list(GET _longattn_torch_out 0 _longattn_torch_prefix)
list(GET _longattn_torch_out 1 LONGATTN_TORCH_VERSION)
list(APPEND CMAKE_PREFIX_PATH "${_longattn_torch_prefix}")
message(STATUS "longattn: building against torch ${LONGATTN_TORCH_VERSION} (${_longattn_torch_prefix})")
