# The wheel of `pip install` (scikit-build-core sets SKBUILD; see pyproject.toml).
#
# The wheel holds the Python package python/longattn (copied by scikit-build-core), and, installed
# here under the component `python` (the only one pyproject.toml installs, so the C++ package's
# headers, static libraries and CMake files stay out of the wheel):
#   longattn/_lib/liblongattn_ops.so   the operators, loaded by longattn/__init__.py
#   longattn/_bin/longattn             the command-line tool, run by the `longattn` entry point
#   longattn/_build_torch.txt          the torch version built against, checked at import
# Both binaries find torch's libraries next to them in site-packages through a relative RPATH
# ($ORIGIN/../../torch/lib): the wheel is built against the user's own torch (no build
# isolation), and torch's C++ libraries do not keep a stable ABI from one release to the next.
# System libraries stay system libraries: a wheel built here needs Debian's libopenblas0-pthread,
# libgomp1 and, for the tool, libtcmalloc-minimal4 where it runs (not a manylinux wheel).
if(NOT SKBUILD)
  return()
endif()

# OpenBLAS's folder too: Debian's libopenblas.so.0 in the default path is whichever variant the
# alternatives system chose, and the kernels need the pthread build (cmake/openblas.cmake says why).
set(LONGATTN_WHEEL_RPATH "$ORIGIN/../../torch/lib;${LONGATTN_OPENBLAS_PTHREAD_DIR}")
set_target_properties(longattn_ops PROPERTIES INSTALL_RPATH "${LONGATTN_WHEEL_RPATH}")
install(TARGETS longattn_ops LIBRARY DESTINATION longattn/_lib COMPONENT python)
set_target_properties(longattn_cli PROPERTIES INSTALL_RPATH "$ORIGIN/../_lib;${LONGATTN_WHEEL_RPATH}")
install(TARGETS longattn_cli RUNTIME DESTINATION longattn/_bin COMPONENT python)
file(WRITE ${CMAKE_CURRENT_BINARY_DIR}/_build_torch.txt "${LONGATTN_TORCH_VERSION}\n")
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/_build_torch.txt DESTINATION longattn COMPONENT python)
